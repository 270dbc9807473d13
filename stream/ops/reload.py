"""Hot reload of model bundles: watch the bundle directory (or get a SIGHUP), load and verify
the new bundle off the hot path, and hand it to the worker to swap in between two batches.

A bundle that fails verification is refused and the old one keeps serving; it is tried again
at every interval until it verifies, because a bundle copied in place (``cp -r``, ``rsync``)
shows a new manifest before its other files are complete.
"""

from __future__ import annotations

import logging
import os
import threading
import time
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
        self._refused: tuple[str, int, int] | None = None  # logged once, retried quietly
        self._retry_at = 0.0  # a refused bundle is tried again after a growing delay
        self._retry_delay = interval_s
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
        self._retry_at = 0.0
        self._wake.set()

    def take(self) -> Pipeline | None:
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def check(self) -> None:
        """One check: load the bundle when its manifest changed since the last successful
        load; a refused one is tried again (logged and counted once per manifest)."""
        current = _fingerprint(self.path)
        if current is None or current == self._seen:
            return
        if current == self._refused and time.monotonic() < self._retry_at:
            return
        try:
            pipeline = self._load(Path(current[0]))  # the version fingerprinted, not the link
        except (CrisisStreamError, OSError, ValueError) as exc:
            self._refuse(current, str(exc))
            return
        self._seen, self._refused = current, None
        with self._lock:
            self._ready = pipeline
        self.last_error = None
        log.info("loaded new bundle %s", pipeline.model_info.model_dump())
        self._report("loaded")

    def refuse(self, reason: str) -> None:
        """The worker refuses a loaded bundle before serving it (e.g. its route topics do not
        exist): the old one keeps serving and this one is tried again."""
        self._seen = None
        self._refuse(_fingerprint(self.path), reason)

    def _refuse(self, fingerprint: tuple[str, int, int] | None, reason: str) -> None:
        self.last_error = reason
        if fingerprint is not None and fingerprint == self._refused:
            self._retry_delay = min(self._retry_delay * 2, 60.0)
            self._retry_at = time.monotonic() + self._retry_delay
            log.debug("bundle at %s still refused: %s", self.path, reason)
            return
        self._refused = fingerprint
        self._retry_delay = self.interval_s
        self._retry_at = time.monotonic() + self._retry_delay
        log.error("refusing new bundle at %s, old one keeps serving: %s", self.path, reason)
        self._report("refused")

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
