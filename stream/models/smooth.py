"""Build time: SmoothQuant-style rescaling of an fp32 ONNX encoder before dynamic int8.

Dynamic int8 quantizes each MatMul's activations with *one* scale per tensor. all-mpnet-base-v2
(fine-tuned) carries a few hidden dimensions far larger than the rest, so that scale leaves the
other dimensions a handful of levels: every plain candidate scored a min cosine vs fp32 below
0.71 on tweets (median ~0.06 for QInt8 per-channel), i.e. broken, not just noisy. SmoothQuant
(Xiao et al., 2023) moves the range into the weights: for each MatMul input ``X`` with a
constant weight ``W``, ``X @ W == (X / s) @ (s[:, None] * W)`` for any per-channel ``s > 0``.
With ``s_j = sqrt(max|X_j| / max|W_j|)`` both sides get moderate ranges. The division is an
inserted ``Mul`` per input (the residual path keeps the unscaled ``X``), so the fp32 graph is
unchanged up to rounding; the activation-by-activation attention MatMuls stay fp32.
``max|X_j|`` is measured on calibration texts (train tweets at build time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream.errors import MissingExtraError

__all__ = ["activation_matmuls", "smooth"]

ALPHA = 0.5  # migration strength (SmoothQuant's default for encoders)


def _onnx() -> tuple[object, object]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnx", "build") from exc
    return onnx, numpy_helper


def activation_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose second input is not a weight (attention scores and context)."""
    onnx, _ = _onnx()
    graph = onnx.load(str(path), load_external_data=False).graph  # type: ignore[attr-defined]
    weights = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] not in weights]


def _input_maxima(
    path: Path, names: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel max |x| over the real tokens of ``feeds`` for each tensor in ``names``."""
    import onnxruntime as ort

    onnx, _ = _onnx()
    model = onnx.load(str(path))  # type: ignore[attr-defined]
    known = {o.name for o in model.graph.output}
    for name in names:
        if name not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))  # type: ignore[attr-defined]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: dict[str, np.ndarray] = {}
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        values = session.run(list(names), feed)
        for name, v in zip(names, values, strict=True):
            m = np.abs(v[real]).max(axis=0)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out


def smooth(src: Path, dst: Path, feeds: Sequence[dict[str, np.ndarray]]) -> int:
    """Write ``src`` rescaled into ``dst`` (same function in fp32); return how many MatMul
    inputs were rescaled. ``feeds``: calibration batches as the runtime builds them."""
    onnx, numpy_helper = _onnx()
    model = onnx.load(str(src))  # type: ignore[attr-defined]
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    groups: dict[str, list[object]] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            w = weights[node.input[1]]
            if len(w.dims) == 2:
                groups.setdefault(node.input[0], []).append(node)
    maxima = _input_maxima(src, list(groups), feeds)
    new_nodes = []
    done: set[str] = set()
    for node in list(graph.node):
        x = node.input[0] if node.op_type == "MatMul" else None
        if x in groups and x not in done:
            done.add(x)
            users = groups[x]
            mats = [numpy_helper.to_array(weights[n.input[1]]) for n in users]  # type: ignore[attr-defined]
            w_max = np.max([np.abs(m).max(axis=1) for m in mats], axis=0)
            s = (np.maximum(maxima[x], 1e-5) ** ALPHA) / (np.maximum(w_max, 1e-5) ** (1 - ALPHA))
            s = s.astype(np.float32)
            inv = f"{x}__smooth_inv"
            graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))  # type: ignore[attr-defined]
            scaled = f"{x}__smoothed"
            new_nodes.append(
                onnx.helper.make_node("Mul", [x, inv], [scaled], name=f"{x}__smooth")  # type: ignore[attr-defined]
            )
            for n, m in zip(users, mats, strict=True):
                name = f"{n.input[1]}__smoothed"  # type: ignore[attr-defined]
                graph.initializer.append(numpy_helper.from_array(m * s[:, None], name))  # type: ignore[attr-defined]
                n.input[0] = scaled  # type: ignore[attr-defined]
                n.input[1] = name  # type: ignore[attr-defined]
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(dst))  # type: ignore[attr-defined]
    return len(groups)
