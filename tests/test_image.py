"""The container image, built and run for real with podman (no Docker daemon needed).

The image is built from the Dockerfile with the bundle given (``BUNDLE_FROM=context``: the
torch stage is skipped) on a base image that works offline (``STREAM_TEST_BASE_IMAGE``, by
default ``localhost/crisis-base:bookworm``, made with mmdebstrap when missing), with this
machine's pip configuration and the local package indexes it names mounted into the build.
The worker container runs against a local broker on the host network: events in, labelled
events out, a healthy HEALTHCHECK, then ``podman stop`` (SIGTERM) and exit code 0. The
aggregator container (same image, ``aggregate``) then counts the worker's outputs, is healthy
on its web port and exits 0 on ``podman stop``.

Podman's global options come from ``STREAM_PODMAN_OPTS`` (default: vfs storage and the
cgroupfs manager, which work on a build machine without systemd or overlay mounts); builds use
chroot isolation, containers the runc runtime when it is installed.

Measured for real (2 CPU cores shared with another test run, vfs storage; the table in
docs/deployment.md#building-the-image): stand-in base 1 min 57 s (once); build 473 s first,
192 s after a ``pyproject.toml`` change, 136 s after a commit (labels and the 600 MB bundle
layer); the first labelled event 23-31 s after ``podman run``; ``podman stop`` to exit 0 in
1.2-1.6 s. The whole module: 3 min 40 s with a cached build.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from stream.local.broker import LocalBroker, free_port
from stream.settings import Settings

from .conftest import BUNDLE, REPO
from .kafka_utils import TopicReader, create_topics, make_events, seed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("podman") is None,
        reason="podman is not installed (Debian: apt-get install podman runc mmdebstrap uidmap)",
    ),
]

BASE_IMAGE = os.environ.get("STREAM_TEST_BASE_IMAGE", "localhost/crisis-base:bookworm")
DEFAULT_OPTS = "--storage-driver vfs --cgroup-manager cgroupfs"
PODMAN = ["podman", *shlex.split(os.environ.get("STREAM_PODMAN_OPTS", DEFAULT_OPTS))]
IMAGE = "localhost/crisis-stream:test"
# the limits this kind of machine accepts (podman's defaults are refused by some sandboxes)
RUN_OPTS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
if shutil.which("runc"):
    RUN_OPTS += ["--runtime", "runc"]
N_EVENTS = 200


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}: rc {proc.returncode}\n{proc.stderr}")
    return proc.stdout.strip()


def pin_key(line: str) -> str:
    """``name==version`` with the name normalised (PEP 503), as pip freeze may spell it."""
    name, _, version = line.partition("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def image_exists(name: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", name], check=False).returncode == 0


def ensure_base() -> None:
    if image_exists(BASE_IMAGE):
        return
    if not BASE_IMAGE.startswith("localhost/crisis-base:") or shutil.which("mmdebstrap") is None:
        pytest.skip(f"no base image {BASE_IMAGE} (and no mmdebstrap to make one)")
    suite = BASE_IMAGE.rsplit(":", 1)[1]
    debootstrap = subprocess.Popen(
        ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip", suite],
        stdout=subprocess.PIPE,
    )
    imported = subprocess.run(
        [*PODMAN, "import", "-", BASE_IMAGE.removeprefix("localhost/")],
        stdin=debootstrap.stdout,
        capture_output=True,
        timeout=900,
        check=False,
    )
    debootstrap.wait(60)
    assert imported.returncode == 0, imported.stderr


def pip_mounts(tmp: Path) -> list[str]:
    """``-v`` options that give the build this machine's pip settings: one pip.conf with the
    effective global settings, and every local path they name (file:// indexes, find-links
    folders, the CA bundle), read-only at the same path."""
    listing = subprocess.run(
        ["python3", "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    settings: dict[str, str] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.partition(".")
        if scope in {"global", ":env:", "install"} and name and value:
            settings[name] = value.strip().strip("'\"")
    paths: set[str] = set()
    for name in ("index-url", "extra-index-url", "find-links", "cert"):
        for item in settings.get(name, "").split():
            path = urlparse(item).path if item.startswith("file:") else item
            if path.startswith("/") and Path(path).exists():
                paths.add(str(Path(path).parent if path.endswith("/simple") else path))
    conf = tmp / "pip.conf"
    conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    mounts = ["-v", f"{conf}:/etc/pip.conf:ro"]
    for path in sorted(paths):
        mounts += ["-v", f"{path}:{path}:ro"]
    return mounts


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (BUNDLE / "manifest.json").is_file():
        pytest.skip(f"no model bundle at {BUNDLE} (make models, or CRISIS_TEST_BUNDLE=DIR)")
    ensure_base()
    revision = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    started = time.monotonic()
    build = subprocess.run(
        [
            "nice",
            "-n",
            "10",
            *PODMAN,
            "build",
            "--format",
            "docker",
            "--isolation",
            "chroot",
            *pip_mounts(tmp_path_factory.mktemp("pip")),
            "--build-arg",
            f"PYTHON_IMAGE={BASE_IMAGE}",
            "--build-arg",
            "BUNDLE_FROM=context",
            "--build-context",
            f"bundle={BUNDLE}",
            "--build-arg",
            f"REVISION={revision or 'unknown'}",
            "-t",
            IMAGE,
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print(f"image built in {time.monotonic() - started:.0f} s")
    yield IMAGE


@pytest.mark.timeout(2400)
def test_the_image_has_its_labels_and_the_bundle(image: str) -> None:
    labels = podman("image", "inspect", "--format", "{{json .Labels}}", image)
    for key in ("title", "description", "source", "licenses", "version", "revision"):
        assert f'"org.opencontainers.image.{key}"' in labels
    assert '"org.opencontainers.image.licenses":"Apache-2.0"' in labels.replace(" ", "")
    # the runtime dependencies are the locked versions
    frozen = podman("run", "--rm", *RUN_OPTS, "--entrypoint", "pip", image, "freeze")
    installed = {pin_key(line) for line in frozen.split()}
    for pin in (REPO / "requirements.lock").read_text().splitlines():
        if pin and not pin.startswith("#"):
            assert pin_key(pin) in installed, pin
    podman("run", "--rm", *RUN_OPTS, image, "models", "verify", "/models/bundle", timeout=300)


@pytest.mark.timeout(2400)
def test_the_worker_container_labels_events_and_stops_cleanly(image: str, tmp_path: Path) -> None:
    name = f"crisis-test-{uuid.uuid4().hex[:8]}"
    with LocalBroker("noida", data_dir=tmp_path / "broker") as broker:
        settings = Settings(
            bootstrap_servers=broker.bootstrap,
            input_topic="in",
            output_topic="out",
            review_topic="review",
            dlq_topic="dlq",
        )
        create_topics(settings, input_partitions=2)
        seed(broker.bootstrap, "in", make_events(N_EVENTS))
        reader = TopicReader(broker.bootstrap, "out")
        metrics_port = free_port()
        started = time.monotonic()
        podman(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            *RUN_OPTS,
            "-e",
            f"CRISIS_BOOTSTRAP_SERVERS={broker.bootstrap}",
            "-e",
            f"CRISIS_GROUP_ID=g-{name}",
            "-e",
            "CRISIS_INPUT_TOPIC=in",
            "-e",
            "CRISIS_OUTPUT_TOPIC=out",
            "-e",
            "CRISIS_REVIEW_TOPIC=review",
            "-e",
            "CRISIS_DLQ_TOPIC=dlq",
            "-e",
            f"CRISIS_METRICS_PORT={metrics_port}",
            "-e",
            "CRISIS_METRICS_HOST=127.0.0.1",  # the host's network: loopback only
            image,
        )
        try:
            first = None
            deadline = started + 300
            while len(reader.records) < N_EVENTS and time.monotonic() < deadline:
                if reader.poll() and first is None:
                    first = time.monotonic() - started
            logs = podman("logs", "--tail", "40", name, check=False)
            assert len(reader.records) >= N_EVENTS, logs
            assert {r["id"] for r in reader.records} == {f"e-{i}" for i in range(N_EVENTS)}
            assert all(r.get("labels") for r in reader.records), reader.records[0]
            print(f"first labelled event {first:.1f} s after podman run")
            # the image's HEALTHCHECK, for the role this container runs (`run`: the worker)
            health = subprocess.run(
                [*PODMAN, "healthcheck", "run", name], capture_output=True, text=True, check=False
            )
            assert health.returncode == 0, health.stdout + health.stderr
            stop_at = time.monotonic()
            podman("stop", "-t", "30", name, timeout=60)
            print(f"stopped in {time.monotonic() - stop_at:.1f} s")
            code = podman("inspect", "--format", "{{.State.ExitCode}}", name)
            assert code == "0", podman("logs", "--tail", "40", name, check=False)
            check_the_aggregator(image, broker.bootstrap, name)
        finally:
            reader.close()
            podman("rm", "-f", name, f"{name}-agg", check=False)


def check_the_aggregator(image: str, bootstrap: str, name: str) -> None:
    """The same image as the aggregator (`aggregate`) reads the worker's outputs; its
    HEALTHCHECK probes the aggregator's web port, not the worker's."""
    port = free_port()
    agg = f"{name}-agg"
    podman(
        "run", "-d", "--name", agg, "--network", "host", *RUN_OPTS,
        "-e", f"CRISIS_BOOTSTRAP_SERVERS={bootstrap}", "-e", "CRISIS_AGG_WEB_BIND=127.0.0.1",
        image, "aggregate", "--topic", "out", "--app-id", f"agg-{name}", "--web-port", str(port),
    )  # fmt: skip
    counted, deadline = 0, time.monotonic() + 180
    while counted < N_EVENTS and time.monotonic() < deadline:
        if podman("inspect", "--format", "{{.State.Running}}", agg) != "true":
            break  # exited: the logs say why
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/counts/", timeout=5) as r:
                windows = json.loads(r.read())["windows"]
            counted = sum(w["totals"].get("informative", 0) for w in windows)  # 1 per event
        except (OSError, ValueError):
            pass
        time.sleep(1)
    assert counted == N_EVENTS, podman("logs", "--tail", "40", agg, check=False)
    health = subprocess.run(
        [*PODMAN, "healthcheck", "run", agg], capture_output=True, text=True, check=False
    )
    assert health.returncode == 0, health.stdout + health.stderr
    podman("stop", "-t", "30", agg, timeout=60)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", agg)
    assert code == "0", podman("logs", "--tail", "40", agg, check=False)
