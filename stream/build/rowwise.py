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
        self.quantized: dict[str, tuple[str, str]] = {}  # activation -> (uint8 rows, scales)
        self._const("rw_eps", np.array(_EPS, np.float32))
        self._const("rw_qmax_a", np.array(qmax_a, np.float32))
        self._const("rw_zero_f", np.array(float(zero), np.float32))
        self._const("rw_zero_u8", np.array(zero, np.uint8))
        if self.axes_input:
            self._const("rw_axes", np.array([-1], np.int64))

    def _const(self, name: str, value: np.ndarray) -> str:
        self.graph.initializer.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def _node(self, op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def activation(self, x: str) -> tuple[str, str]:
        """uint8 rows and per-row scales of ``x``, built once per tensor (q, k, v share one)."""
        if x not in self.quantized:
            p = f"rw/{len(self.quantized)}/"
            absx = self._node("Abs", [x], p + "abs")
            if self.axes_input:  # opset 18 made ReduceMax's axes an input
                amax = self._node("ReduceMax", [absx, "rw_axes"], p + "amax", keepdims=1)
            else:
                amax = self._node("ReduceMax", [absx], p + "amax", axes=[-1], keepdims=1)
            scale = self._node(
                "Div",
                [self._node("Max", [amax, "rw_eps"], p + "amax_eps"), "rw_qmax_a"],
                p + "scale",
            )
            rounded = self._node("Round", [self._node("Div", [x, scale], p + "div")], p + "round")
            shifted = self._node("Add", [rounded, "rw_zero_f"], p + "shift")
            q = self._node("Cast", [shifted], p + "q", to=self.onnx.TensorProto.UINT8)
            self.quantized[x] = (q, scale)
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
        q, scale = self.activation(x)
        p = f"rw/{node.name or node.output[0]}/"
        self.nodes.append(
            self.onnx.helper.make_node(
                "MatMulInteger", [q, wq_name, "rw_zero_u8"], [p + "int32"], name=p + "mm"
            )
        )
        f = self._node("Cast", [p + "int32"], p + "float", to=self.onnx.TensorProto.FLOAT)
        rows = self._node("Mul", [f, scale], p + "rows")
        self.nodes.append(
            self.onnx.helper.make_node("Mul", [rows, ws_name], [node.output[0]], name=p + "out")
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
