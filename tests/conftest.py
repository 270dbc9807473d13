"""Shared fixtures: a real Kafka-protocol broker per session, the default model bundle.

Set ``STREAM_TEST_BOOTSTRAP=host:port`` to run the Kafka tests against an existing broker
(for example a real Apache Kafka) instead of starting noida-db / tansu.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import shutil
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from stream.build.encoders import MPNET_ENV
from stream.local.broker import LocalBroker
from stream.models.bundle import Bundle, load_bundle
from stream.settings import Settings

REPO = Path(__file__).resolve().parent.parent
BUNDLE = Path(os.environ.get("CRISIS_TEST_BUNDLE", REPO / "models" / "e5-crisis"))
SHARED = REPO.parent / "shared" / "datasets" / "crisismmd"

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"CrisisMMD not found at {SHARED} (../shared is missing)"
)


@functools.cache
def _real_stderr() -> TextIO:
    """A copy of the terminal's stderr, taken between tests: during a test, pytest points fd 2
    at its capture file, which a process that ends at once never shows."""
    return os.fdopen(os.dup(sys.stderr.fileno()), "w")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    """pytest-timeout cannot stop a test stuck in C code that holds the GIL (its signal handler
    and its timer thread both need it). faulthandler's watchdog needs no GIL: past the test's
    own limit and five minutes more (``STREAM_TEST_WATCHDOG_MARGIN_S``), it prints every
    thread's stack and ends the run, so a deadlock fails in minutes instead of holding CI for
    hours."""
    limit = _timeout_s(item)
    if not limit or float(_ini(item.config, "faulthandler_timeout") or 0) > 0:
        yield  # timeouts off, or pytest's own faulthandler timer asked for instead
        return
    margin = float(os.environ.get("STREAM_TEST_WATCHDOG_MARGIN_S", "300"))
    faulthandler.dump_traceback_later(limit + margin, exit=True, file=_real_stderr())
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _timeout_s(item: pytest.Item) -> float:
    """The test's pytest-timeout limit, as pytest-timeout reads it: the marker, then
    ``--timeout``, then the ini value; 0 when timeouts are off or the plugin is not loaded."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and (marker.args or "timeout" in marker.kwargs):
        value = marker.args[0] if marker.args else marker.kwargs["timeout"]
    else:
        value = item.config.getoption("timeout", None)
        if value is None:
            value = _ini(item.config, "timeout")  # None under -p no:timeout
    return float(value or 0)


def _ini(config: pytest.Config, name: str) -> object:
    """An ini value, or None where the plugin that declares it is not loaded."""
    try:
        return config.getini(name)
    except ValueError:
        return None


class BrokerHandle:
    """What a test needs to know about a broker: where it is and what it can do."""

    def __init__(self, kind: str, bootstrap: str, broker: LocalBroker | None) -> None:
        self.kind = kind
        self.bootstrap = bootstrap
        self.broker = broker

    def settings(self, **overrides: object) -> Settings:
        """Settings with fresh topic and group names so tests never share state."""
        tag = uuid.uuid4().hex[:8]
        base: dict[str, object] = {
            "bootstrap_servers": self.bootstrap,
            "group_id": f"g-{tag}",
            "input_topic": f"in-{tag}",
            "output_topic": f"out-{tag}",
            "review_topic": f"review-{tag}",
            "dlq_topic": f"dlq-{tag}",
            "bundle": BUNDLE,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "commit_interval_ms": 500,
        }
        base.update(overrides)
        return Settings(**base)  # type: ignore[arg-type]


def _start(kind: str) -> Iterator[BrokerHandle]:
    env = os.environ.get("STREAM_TEST_BOOTSTRAP")
    if env:
        yield BrokerHandle("external", env, None)
        return
    broker = LocalBroker(kind).start()  # type: ignore[arg-type]
    try:
        yield BrokerHandle(kind, broker.bootstrap, broker)
    finally:
        broker.cleanup()


@pytest.fixture(scope="session")
def noida() -> Iterator[BrokerHandle]:
    yield from _start("noida")


@pytest.fixture(scope="session")
def tansu() -> Iterator[BrokerHandle]:
    if os.environ.get("STREAM_TEST_BOOTSTRAP"):
        pytest.skip("external broker given: the tansu run would duplicate it")
    yield from _start("tansu")


@pytest.fixture(params=["noida", "tansu"])
def any_broker(request: pytest.FixtureRequest) -> BrokerHandle:
    """The core delivery tests run against both independent broker implementations."""
    handle: BrokerHandle = request.getfixturevalue(request.param)
    return handle


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    if not (BUNDLE / "manifest.json").is_file():
        pytest.fail(f"no model bundle at {BUNDLE}: run `make models` first (make test does)")
    return load_bundle(BUNDLE)


def tiny_model(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path, env: str, tokenizer: Path, build: Any
) -> Path:
    """``build(transformers)``'s randomly initialised model (seed 0) saved with ``tokenizer``
    into ``model_dir``, which ``$env`` then names (the path online users take)."""
    pytest.importorskip("torch", reason="building needs the build extra")
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    build(transformers).save_pretrained(str(model_dir))
    shutil.copyfile(tokenizer, model_dir / "tokenizer.json")
    monkeypatch.setenv(env, str(model_dir))
    return model_dir


@pytest.fixture
def tiny_mpnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 2-layer MPNet with random weights and the package MiniLM's (uncased WordPiece)
    tokenizer, as ``$CRISIS_STREAM_MPNET_DIR``."""
    from stream.build.export import source_model_dir

    def build(transformers: Any) -> Any:
        config = transformers.MPNetConfig(
            vocab_size=30527,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
        return transformers.MPNetModel(config, add_pooling_layer=False)

    tokenizer = source_model_dir() / "tokenizer.json"
    return tiny_model(monkeypatch, tmp_path / "tiny-mpnet", MPNET_ENV, tokenizer, build)
