"""Hot reload of model bundles: watch the bundle directory (or get a SIGHUP), load and verify
the new bundle off the hot path, and hand it to the worker to swap in between two batches.

A bundle that fails verification is refused and the old one keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from stream.errors import CrisisStreamError
from stream.pipeline import Pipeline

__all__ = ["BundleReloader"]

log = logging.getLogger(__name__)


def _fingerprint(path: Path) -> tuple[str, int, int] | None:
    manifest = path / "manifest.json"
    try:
        st = manifest.stat()
    except OSError:
        return None
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size)


class BundleReloader:
    """Poll ``path`` every ``interval_s``; ``take()`` returns a freshly loaded pipeline once."""

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], Pipeline],
        interval_s: float = 2.0,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._load = load
        self.interval_s = interval_s
        self._on_result = on_result
        self._seen = _fingerprint(self.path)
        self._ready: Pipeline | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bundle-reload")
        self.last_error: str | None = None

    def start(self) -> BundleReloader:
        self._thread.start()
        return self

    def trigger(self) -> None:
        """Check now (SIGHUP), even if the manifest looks unchanged."""
        self._seen = None
        self._wake.set()

    def take(self) -> Pipeline | None:
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def check(self) -> None:
        """One check: load the bundle when its manifest changed since the last look."""
        current = _fingerprint(self.path)
        if current is None or current == self._seen:
            return
        self._seen = current
        try:
            pipeline = self._load(self.path)
        except (CrisisStreamError, OSError, ValueError) as exc:
            self.last_error = str(exc)
            log.error("refusing new bundle at %s, old one keeps serving: %s", self.path, exc)
            self._report("refused")
            return
        with self._lock:
            self._ready = pipeline
        self.last_error = None
        log.info("loaded new bundle %s", pipeline.model_info.model_dump())
        self._report("loaded")

    def _report(self, result: str) -> None:
        if self._on_result is not None:
            self._on_result(result)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.check()
            except Exception as exc:  # a thread that died here would end hot reload silently
                self.last_error = str(exc)
                log.exception("bundle reload check failed; the old bundle keeps serving")
                self._report("refused")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
