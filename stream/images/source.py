"""Where an event's image bytes come from: inline base64, a local file, or (opt-in) a URL.

Events arrive from a shared topic, so none of the three may become a way to read or reach
what the operator did not mean to expose: base64 is size-capped before it is decoded, local
paths are confined to one image root (and disabled without one), and URL fetching is off
unless enabled with a host allowlist (see :mod:`stream.images.fetch`).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.images.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError
from stream.images.fetch import FetchPolicy, fetch_url
from stream.schemas import ImageRef
from stream.settings import DEFAULT_BATCH_MAX_PIXELS

__all__ = ["ImageOptions", "decode_base64", "load_image_bytes", "read_local"]


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
