"""Build time: int8 with one activation scale per token, so a tweet's label never depends on
the other tweets in its micro-batch.

Why: ``quantize_dynamic`` quantizes each MatMul's activations with one scale for the whole
``[batch, tokens, hidden]`` tensor, so a tweet's embedding moves with its batch companions. On
the agreed dev tweets that flipped 1.1-1.3 % of the default bundle's labels between "encoded
alone" and "encoded in a batch of 32" (measured by re-encoding dev alone and in batches), and
it made the same
bundle's dev figures move by ~0.01 macro-F1 when only the set of texts embedded together
changed: a backtest could not promise the live worker's labels.

Here every MatMul with a constant weight becomes, per *row* (token) ``x`` of its input::

    s = max|x| / QMAX_A;  q = round(x / s) + ZERO  (uint8);  y = (q - ZERO) @ Wq * s * w_scale

with ``Wq`` symmetric per output channel. The integer product is exact and rows never mix, so
a token's output depends on that token alone (up to fp32 rounding elsewhere in the graph).
onnxruntime rejects a per-row ``a_zero_point`` (microsoft/onnxruntime#27897), hence symmetric
rows with the one shared zero point. AVX2 CPUs without VNNI add pairs of uint8 x int8
products in int16, which saturates above 32,767: ``bits`` picks 7-bit weights with 8-bit
activations ("w7") or 8-bit weights with 7-bit activations ("a7"), both inside that limit.
Activation x activation MatMuls (attention) stay fp32; the embedding tables are int8 per tensor
(weights only), as ``quantize_dynamic`` stores them.

The graph flattens each activation to ``[rows, K]`` so that onnxruntime's per-axis
``QuantizeLinear`` (axis 0: one scale per row) and ``DequantizeLinear`` of the int32 product
do in one pass what ``Div``, ``Round``, ``Add``, ``Cast`` and ``Cast``, ``Mul`` did in six:
the same IEEE operations in the same order, so the hidden states are bit for bit those of the
composed form (tested), at 1.09-1.26x its speed on the e5 encoder (bench/results/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream.build.onnx_tools import onnx_module

__all__ = ["Bits", "quantize_rowwise"]

Bits = Literal["w7", "a7"]
_EPS = 1e-8


class _Rewriter:
    """Collects the new nodes and initializers of one graph rewrite."""

    def __init__(self, graph: Any, bits: Bits, opset: int) -> None:
        self.onnx = onnx_module()
        self.graph = graph
        self.axes_input = opset >= 18
        self.inits = {i.name: i for i in graph.initializer}
        self.qmax_w = 63.0 if bits == "w7" else 127.0
        qmax_a, zero = (127.0, 128) if bits == "w7" else (63.0, 64)
        self.nodes: list[Any] = []
        self.done: set[str] = set()  # quantized weights already stored
        # activation -> (uint8 rows [R, K], per-row scales [R], shape of x without its last axis)
        self.quantized: dict[str, tuple[str, str, str]] = {}
        self._const("rw_eps", np.array(_EPS, np.float32))
        self._const("rw_qmax_a", np.array(qmax_a, np.float32))
        self._const("rw_zero_u8", np.array(zero, np.uint8))
        self._const("rw_zero_row", np.array([zero], np.uint8))
        if self.axes_input:
            self._const("rw_axes", np.array([1], np.int64))

    def _const(self, name: str, value: np.ndarray) -> str:
        self.graph.initializer.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def _node(self, op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def activation(self, x: str, k: int) -> tuple[str, str, str]:
        """uint8 rows, per-row scales and leading shape of ``x`` (last axis ``k``), built once
        per tensor (q, k, v share one)."""
        if x not in self.quantized:
            p = f"rw/{len(self.quantized)}/"
            rows = self._node(
                "Reshape", [x, self._const(p + "k", np.array([-1, k], np.int64))], p + "rows"
            )
            absx = self._node("Abs", [rows], p + "abs")
            if self.axes_input:  # opset 18 made ReduceMax's axes an input
                amax = self._node("ReduceMax", [absx, "rw_axes"], p + "amax", keepdims=0)
            else:
                amax = self._node("ReduceMax", [absx], p + "amax", axes=[1], keepdims=0)
            scale = self._node(
                "Div",
                [self._node("Max", [amax, "rw_eps"], p + "amax_eps"), "rw_qmax_a"],
                p + "scale",
            )
            # per-axis QuantizeLinear wants one zero point per row: the same one, broadcast
            zero = self._node(
                "Expand", ["rw_zero_row", self._node("Shape", [scale], p + "n")], p + "zero"
            )
            q = self._node("QuantizeLinear", [rows, scale, zero], p + "q", axis=0)
            lead = self._node("Shape", [x], p + "lead", end=-1)
            self.quantized[x] = (q, scale, lead)
        return self.quantized[x]

    def matmul(self, node: Any) -> None:
        """Replace ``node`` (x @ W, W a constant [K, N]) by the per-row integer product."""
        x, w_name = node.input
        wq_name, ws_name = f"rw/{w_name}/wq", f"rw/{w_name}/w_scale"
        if wq_name not in self.done:  # a weight shared by two MatMuls is stored once
            w = self.onnx.numpy_helper.to_array(self.inits[w_name]).astype(np.float32)
            w_scale = np.maximum(np.abs(w).max(axis=0), _EPS) / self.qmax_w
            wq = np.clip(np.round(w / w_scale), -self.qmax_w, self.qmax_w).astype(np.int8)
            self._const(wq_name, wq)
            self._const(ws_name, w_scale.astype(np.float32))
            self.done.add(wq_name)
        k, n = self.inits[w_name].dims
        q, scale, lead = self.activation(x, k)
        p = f"rw/{node.name or node.output[0]}/"
        acc = self._node("MatMulInteger", [q, wq_name, "rw_zero_u8"], p + "int32")
        rows = self._node("DequantizeLinear", [acc, scale], p + "rows", axis=0)
        out = self._node("Mul", [rows, ws_name], p + "out")
        shape = self._node(
            "Concat", [lead, self._const(p + "n", np.array([n], np.int64))], p + "shape", axis=0
        )
        self.nodes.append(
            self.onnx.helper.make_node(
                "Reshape", [out, shape], [node.output[0]], name=p + "reshape", allowzero=1
            )
        )

    def gather(self, node: Any) -> None:
        """Embedding lookup from an int8 table (per tensor), dequantized after the Gather."""
        table = self.onnx.numpy_helper.to_array(self.inits[node.input[0]]).astype(np.float32)
        scale = max(float(np.abs(table).max()), _EPS) / 127.0
        p = f"rw/{node.input[0]}/"
        tq = self._const(p + "q", np.round(table / scale).astype(np.int8))
        sc = self._const(p + "scale", np.array(scale, np.float32))
        zp = self._const(p + "zero", np.array(0, np.int8))
        rows = self._node("Gather", [tq, node.input[1]], p + "rows", axis=0)
        self.nodes.append(
            self.onnx.helper.make_node(
                "DequantizeLinear", [rows, sc, zp], [node.output[0]], name=p + "dq"
            )
        )


def quantize_rowwise(
    fp32: Path, out: Path, bits: Bits = "w7", exclude: frozenset[str] = frozenset()
) -> None:
    """Write ``out``: ``fp32`` with every constant-weight MatMul (but those named in
    ``exclude``) quantized per token as described above, and its 2-D embedding tables int8.
    Deterministic: the same input gives the same bytes."""
    onnx = onnx_module()
    model = onnx.load(str(fp32))
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 15:  # Shape's start/end attributes
        raise ValueError(f"{fp32}: per-token int8 needs ONNX opset 15 or newer, not {opset}")
    # the rewrite reshapes each product back from [rows, N]; without the source's inferred
    # shapes onnxruntime no longer sees rank 3 there and stops fusing bias + GELU (BiasGelu)
    shapes = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    rw = _Rewriter(graph, bits, opset)
    used: set[str] = set()
    kept = []
    for node in graph.node:
        b = node.input[1] if len(node.input) > 1 else ""
        if (
            node.op_type == "MatMul"
            and node.name not in exclude
            and b in rw.inits
            and (len(rw.inits[b].dims) == 2)
        ):
            rw.matmul(node)
            used.add(b)
            if node.output[0] in shapes:
                graph.value_info.append(shapes[node.output[0]])
        elif (
            node.op_type == "Gather"
            and node.input[0] in rw.inits
            and (len(rw.inits[node.input[0]].dims) == 2)
        ):
            rw.gather(node)
            used.add(node.input[0])
        else:
            kept.append(node)
            continue
        kept.extend(rw.nodes)
        rw.nodes.clear()
    still = {i for n in kept for i in n.input}
    originals = [i for i in graph.initializer if i.name in used and i.name not in still]
    for init in originals:
        graph.initializer.remove(init)
    del graph.node[:]
    graph.node.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
