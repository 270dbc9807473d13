"""Where an event's image bytes come from: inline base64, a local file, or (opt-in) a URL.

Events arrive from a shared topic, so none of the three may become a way to read or reach
what the operator did not mean to expose: base64 is size-capped before it is decoded, local
paths are confined to one image root (and disabled without one), and URL fetching is off
unless enabled with a host allowlist (see :mod:`stream.images.fetch`).

A batch's URLs are fetched concurrently on a small bounded thread pool and under one time
budget for the batch (:class:`BatchLoader`), so slow servers cannot hold the worker's step for
the sum of their timeouts.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.images.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError
from stream.images.fetch import FetchPolicy, fetch_url
from stream.schemas import ImageRef
from stream.settings import DEFAULT_BATCH_MAX_PIXELS

__all__ = ["BatchLoader", "ImageOptions", "decode_base64", "load_image_bytes", "read_local"]

#: longest wait for a fetch to complete before the progress callback is called again
_PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True)
class ImageOptions:
    """Limits and permissions of the image path (``CRISIS_IMAGE_*`` settings)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_max_pixels: int = DEFAULT_BATCH_MAX_PIXELS
    root: Path | None = None
    fetch_enabled: bool = False
    fetch_allow_hosts: tuple[str, ...] = ()
    fetch_allow_private: bool = False
    fetch_timeout_s: float = 5.0
    fetch_concurrency: int = 8
    fetch_batch_budget_s: float = 10.0
    cells_top_k: int | None = None

    @classmethod
    def from_settings(cls, settings: object) -> ImageOptions:
        """Read the ``image_*`` fields of a Settings object, with these defaults if absent."""

        def get(name: str, default: Any) -> Any:
            value = getattr(settings, name, default)
            return default if value is None else value

        root = getattr(settings, "image_root", None)
        return cls(
            max_bytes=int(get("image_max_bytes", DEFAULT_MAX_BYTES)),
            max_pixels=int(get("image_max_pixels", DEFAULT_MAX_PIXELS)),
            batch_max_pixels=int(get("image_batch_max_pixels", DEFAULT_BATCH_MAX_PIXELS)),
            root=Path(root) if root else None,
            fetch_enabled=bool(get("image_fetch_enabled", False)),
            fetch_allow_hosts=tuple(get("image_fetch_allow_hosts", ())),
            fetch_allow_private=bool(get("image_fetch_allow_private", False)),
            fetch_timeout_s=float(get("image_fetch_timeout_s", 5.0)),
            fetch_concurrency=int(get("image_fetch_concurrency", 8)),
            fetch_batch_budget_s=float(get("image_fetch_batch_budget_s", 10.0)),
            cells_top_k=getattr(settings, "image_cells_top_k", None),
        )

    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(
            allow_hosts=self.fetch_allow_hosts,
            allow_private=self.fetch_allow_private,
            timeout_s=self.fetch_timeout_s,
            max_bytes=self.max_bytes,
        )


def decode_base64(b64: str, max_bytes: int) -> bytes:
    """Strict base64 (a ``data:`` URI prefix and whitespace are tolerated), size-capped first."""
    if b64.startswith("data:"):
        _, sep, b64 = b64.partition(",")
        if not sep:
            raise ImageError("bad_base64", "data URI without a comma")
    limit = (max_bytes + 2) // 3 * 4
    if len(b64) > limit + limit // 32 + 16:  # room for MIME line breaks
        raise ImageError("too_large", f"base64 image exceeds the {max_bytes} byte limit")
    compact = "".join(b64.split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("bad_base64", f"invalid base64: {exc}") from exc
    if len(data) > max_bytes:
        raise ImageError("too_large", f"{len(data)} bytes exceeds the {max_bytes} byte limit")
    return data


def read_local(path: str, root: Path | None, max_bytes: int) -> bytes:
    """Read a regular file inside ``root``; relative paths are relative to ``root``.

    Without a root, local paths are refused: a worker fed from a shared topic must not read
    whatever file an event names. Symlinks are resolved before the check, and devices, FIFOs
    and directories are refused without reading from them.
    """
    if root is None:
        raise ImageError(
            "path_refused",
            "image.path is disabled: set CRISIS_IMAGE_ROOT to the directory images are read from",
        )
    if "\x00" in path:
        raise ImageError("path_refused", "image.path contains a NUL byte")
    base = root.resolve()
    try:
        target = (base / path).resolve()
    except (OSError, ValueError) as exc:  # a name too long, a link loop, ...
        raise ImageError("path_refused", f"{path[:80]!r} cannot be resolved: {exc}") from exc
    if not target.is_relative_to(base):
        raise ImageError("path_refused", f"{path!r} is outside the image root")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise ImageError("not_found", f"no file {path!r} under the image root") from exc
    except OSError as exc:
        raise ImageError("unreadable", f"cannot open {path!r}: {exc.strerror}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ImageError("path_refused", f"{path!r} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > max_bytes:
            raise ImageError(
                "too_large", f"{info.st_size} bytes exceeds the {max_bytes} byte limit"
            )
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError("too_large", f"file grew past the {max_bytes} byte limit")
    return data


def load_image_bytes(ref: ImageRef, options: ImageOptions) -> bytes:
    """The raw bytes an :class:`ImageRef` points at, within ``options``' limits."""
    if ref.b64 is not None:
        return decode_base64(ref.b64, options.max_bytes)
    if ref.path is not None:
        return read_local(ref.path, options.root, options.max_bytes)
    if ref.url is not None:
        if not options.fetch_enabled:
            raise ImageError(
                "fetch_disabled", "image.url fetching is off (CRISIS_IMAGE_FETCH_ENABLED)"
            )
        return fetch_url(ref.url, options.fetch_policy())
    raise ImageError("empty", "image reference without b64, path or url")


#: what :meth:`BatchLoader.load` gives per reference: the bytes, or why there are none
Loaded = bytes | Exception


def _outcome(future: Future[bytes]) -> Loaded:
    try:
        return future.result()
    except Exception as exc:  # reported per image by the caller, never raised
        return exc


class BatchLoader:
    """The image bytes of one batch's references, in order.

    Inline and local images are read at once. URLs are fetched concurrently on a thread pool of
    ``options.fetch_concurrency`` threads (created on first use, kept across batches), and the
    batch waits for them at most ``options.fetch_batch_budget_s``: a URL not fetched by then
    gets ``ImageError("batch_fetch_budget", ...)``. A fetch still running past the budget ends
    at its own deadline (``fetch_timeout_s``) and its result is dropped. While it waits, the
    loader calls ``progress`` after every completed fetch and at least every second, so a
    caller's liveness signal stays fresh during a long batch.
    """

    def __init__(self, options: ImageOptions) -> None:
        self.options = options
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(1, self.options.fetch_concurrency),
                    thread_name_prefix="image-fetch",
                )
            return self._pool

    def load(
        self, refs: Sequence[ImageRef], progress: Callable[[], None] | None = None
    ) -> list[Loaded]:
        opts = self.options
        out: list[Loaded | None] = [None] * len(refs)
        fetches: dict[Future[bytes], int] = {}
        for i, ref in enumerate(refs):
            if ref.b64 is None and ref.path is None and ref.url is not None and opts.fetch_enabled:
                fetches[self._executor().submit(fetch_url, ref.url, opts.fetch_policy())] = i
                continue
            try:
                out[i] = load_image_bytes(ref, opts)
            except Exception as exc:  # reported per image by the caller, never raised
                out[i] = exc
        if fetches:
            self._wait(fetches, out, progress)
        return [x if x is not None else ImageError("empty", "no image") for x in out]

    def _wait(
        self,
        fetches: dict[Future[bytes], int],
        out: list[Loaded | None],
        progress: Callable[[], None] | None,
    ) -> None:
        budget = self.options.fetch_batch_budget_s
        end = time.monotonic() + budget
        pending = set(fetches)
        while pending:
            left = end - time.monotonic()
            if left <= 0:
                break
            done, pending = wait(
                pending, timeout=min(left, _PROGRESS_EVERY_S), return_when=FIRST_COMPLETED
            )
            for future in done:
                out[fetches[future]] = _outcome(future)
            if progress is not None:
                progress()
        for future in pending:
            # not started yet: never will be; running: ends at its own deadline, unused
            if not future.cancel() and future.done():  # finished just now: use it
                out[fetches[future]] = _outcome(future)
                continue
            out[fetches[future]] = ImageError(
                "batch_fetch_budget",
                f"not fetched within the batch's {budget:g}s budget "
                "(CRISIS_IMAGE_FETCH_BATCH_BUDGET_S)",
            )

    def close(self) -> None:
        """Stop the pool's threads once their current fetches end (idempotent)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
