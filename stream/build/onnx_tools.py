"""The optional ``onnx`` package for the graph rewrites (smoothing, row-wise int8)."""

from __future__ import annotations

from typing import Any

from stream.errors import MissingExtraError

__all__ = ["onnx_module"]


def onnx_module() -> Any:
    """The ``onnx`` package (with ``numpy_helper``), or the error naming the build extra: the
    graph rewrites of :mod:`stream.build.smooth` and :mod:`stream.build.rowwise` need it."""
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnx", "build") from exc
    return onnx
