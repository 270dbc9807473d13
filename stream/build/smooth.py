"""Build time: SmoothQuant-style rescaling of an fp32 ONNX encoder before dynamic int8.

Dynamic int8 quantizes each MatMul's activations with *one* scale per tensor. The fine-tuned
all-mpnet-base-v2 has a few hidden dimensions far larger than the rest (attention LayerNorm
outputs up to 65, GELU outputs up to 100, medians 1-2), so that scale leaves the other dimensions
a handful of levels. SmoothQuant (Xiao et al., 2023) moves range into the weights: for each
MatMul input ``X`` with a constant weight ``W``, ``X @ W == (X / s) @ (s[:, None] * W)`` for any
per-channel ``s > 0``; with ``s_j = sqrt(max|X_j| / max|W_j|)`` both sides get moderate ranges.
The division is an inserted ``Mul`` per input (the residual path keeps the unscaled ``X``), so
the fp32 graph computes the same function up to rounding. ``max|X_j|`` is measured on
calibration texts (train tweets at build time). It is one part of the last int8 candidate in
:data:`stream.build.export.CANDIDATES`, beside 7-bit weights (AVX2 saturation) and fp32 FFN
outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.build.onnx_tools import onnx_module

__all__ = ["smooth"]

ALPHA = 0.5  # migration strength (SmoothQuant's default for encoders)


def _input_maxima(
    model: Any, names: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel max |x| over the real tokens of ``feeds`` for each tensor in ``names``: the
    tensors become extra graph outputs for one session, then the outputs are put back."""
    import onnxruntime as ort

    onnx = onnx_module()
    outputs = len(model.graph.output)
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in known
    )
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    finally:
        del model.graph.output[outputs:]
    inputs = {i.name for i in model.graph.input}
    out: dict[str, np.ndarray] = {}
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        values = session.run(list(names), {k: v for k, v in feed.items() if k in inputs})
        for name, v in zip(names, values, strict=True):
            m = np.abs(v[real]).max(axis=0)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out


def smooth(src: Path, dst: Path, feeds: Sequence[dict[str, np.ndarray]]) -> int:
    """Write ``src`` rescaled into ``dst`` (same function in fp32); return how many MatMul
    inputs were rescaled. ``feeds``: calibration batches as the runtime builds them (keys the
    graph has no input for, e.g. ``token_type_ids`` for MPNet, are ignored)."""
    onnx = onnx_module()
    to_array, from_array = onnx.numpy_helper.to_array, onnx.numpy_helper.from_array
    model = onnx.load(str(src))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if w is not None and len(w.dims) == 2:
            groups.setdefault(node.input[0], []).append(node)
    maxima = _input_maxima(model, list(groups), feeds)
    new_nodes = []
    done: set[str] = set()
    for node in list(graph.node):
        x = node.input[0] if node.op_type == "MatMul" else None
        if x in groups and x not in done:
            done.add(x)
            users = groups[x]
            mats = [to_array(weights[n.input[1]]) for n in users]
            w_max = np.max([np.abs(m).max(axis=1) for m in mats], axis=0)
            s = (np.maximum(maxima[x], 1e-5) ** ALPHA) / (np.maximum(w_max, 1e-5) ** (1 - ALPHA))
            s = s.astype(np.float32)
            inv = f"{x}__smooth_inv"
            graph.initializer.append(from_array((1.0 / s).astype(np.float32), inv))
            scaled = f"{x}__smoothed"
            new_nodes.append(onnx.helper.make_node("Mul", [x, inv], [scaled], name=f"{x}__smooth"))
            for n, m in zip(users, mats, strict=True):
                name = f"{n.input[1]}__smoothed"
                graph.initializer.append(from_array(m * s[:, None], name))
                n.input[0] = scaled
                n.input[1] = name
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(dst))
    return len(groups)
