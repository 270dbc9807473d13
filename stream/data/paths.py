"""Where the datasets live: CrisisMMD, CrisisLexT26 and Figure Eight sit side by side under one
root, ``../shared/datasets`` next to the checkout by convention."""

from __future__ import annotations

from pathlib import Path

__all__ = ["datasets_root"]

_RELATIVE = Path("..") / "shared" / "datasets"
#: the checkout that holds the ``stream`` package (site-packages once installed)
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent


def datasets_root() -> Path | None:
    """The first existing of ``./../shared/datasets`` (from the current directory) and
    ``<checkout>/../shared/datasets`` (from the package location); None when neither does."""
    for candidate in (Path.cwd() / _RELATIVE, _PACKAGE_PARENT / _RELATIVE):
        if candidate.is_dir():
            return candidate.resolve()
    return None
