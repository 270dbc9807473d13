"""Per-token int8: a text's embedding does not depend on its batch; per-tensor int8 does."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.build.export import CANDIDATES, SAMPLE_TEXTS, Quantization, embed
from stream.local.demo import sample_events
from stream.models.bundle import Bundle
from stream.models.numeric import cosine_stats
from stream.models.text import TextEncoder
from stream.schemas import InputEvent

from .conftest import BUNDLE

pytest.importorskip("onnx", reason="quantizing needs the build extra")

TEXTS = [InputEvent.model_validate_json(v).text for v in sample_events()][:12]
FP32 = BUNDLE / "text_encoder.fp32.onnx"
TOKENIZER = BUNDLE / "tokenizer.json"


def _quantize(q: Quantization, out: Path) -> Path:
    from stream.build.export import quantize_int8

    quantize_int8(FP32, out, q, TOKENIZER, SAMPLE_TEXTS)
    return out


def _alone_vs_batched(path: Path) -> float:
    enc = TextEncoder(path, TOKENIZER, 128, 1, 32)
    together = enc.encode(TEXTS).embeddings
    alone = np.stack([enc.encode([t]).embeddings[0] for t in TEXTS])
    return float(np.abs(together - alone).max())


@pytest.fixture(scope="module")
def per_token(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _quantize(CANDIDATES[0], tmp_path_factory.mktemp("rowwise") / "int8.onnx")


def test_per_token_int8_is_batch_independent_per_tensor_is_not(per_token: Path, tmp_path: Path):
    assert CANDIDATES[0].per_token
    assert _alone_vs_batched(per_token) < 1e-6
    per_tensor = next(q for q in CANDIDATES if not q.per_token)
    # the contrast shows the check can fail: one activation scale per batch tensor
    assert _alone_vs_batched(_quantize(per_tensor, tmp_path / "dyn.onnx")) > 1e-4


def test_per_token_int8_stays_close_to_fp32_and_is_deterministic(per_token: Path, tmp_path: Path):
    cos = cosine_stats(
        embed(per_token, TOKENIZER, SAMPLE_TEXTS), embed(FP32, TOKENIZER, SAMPLE_TEXTS)
    )
    assert cos["min"] >= 0.98, cos
    again = _quantize(CANDIDATES[0], tmp_path / "again.onnx")
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (per_token, again)]
    assert digest[0] == digest[1]
    assert per_token.stat().st_size < FP32.stat().st_size / 3  # weights and embeddings int8


def test_per_token_graph_has_no_float_weight_matmul_and_keeps_excluded_nodes(
    per_token: Path, tmp_path: Path
):
    import onnx

    from stream.build.rowwise import quantize_rowwise

    source = onnx.load(str(FP32)).graph
    ffn = frozenset(
        n.name for n in source.node if re.search(r"layer\.\d+/output/dense/MatMul$", n.name)
    )
    layers = len(ffn)  # one FFN output projection per layer: 6 in MiniLM, 12 in e5-small
    assert layers in (6, 12)
    graph = onnx.load(str(per_token)).graph
    consts = {i.name for i in graph.initializer}
    ops = [n.op_type for n in graph.node]
    # six weight MatMuls per layer (Q, K, V, attention output, FFN in and out)
    assert "DynamicQuantizeLinear" not in ops and ops.count("MatMulInteger") == 6 * layers
    assert not [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in consts]
    quantize_rowwise(FP32, tmp_path / "partial.onnx", "w7", ffn)
    partial = onnx.load(str(tmp_path / "partial.onnx")).graph
    assert {n.name for n in partial.node if n.op_type == "MatMul"} >= ffn
    assert [n.op_type for n in partial.node].count("MatMulInteger") == 6 * layers - len(ffn)


def test_onnxruntime_still_fuses_bias_and_gelu_in_the_per_token_graph(
    per_token: Path, tmp_path: Path
):
    """The products are reshaped back from [rows, N]; the graph carries their source shapes,
    so onnxruntime still sees rank 3 there and fuses each FFN's bias + GELU (BiasGelu)."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(per_token), sess_options=opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    layers = ops.count("MatMulInteger") // 6
    assert ops.count("BiasGelu") == layers and "Gelu" not in ops


def test_quantization_names_and_manifest_say_per_token():
    q = CANDIDATES[0]
    assert q.name == "QInt8-per_channel-reduce_range-per_token"
    assert "per token" in q.as_manifest()["activations"]
    assert "per tensor" in Quantization().as_manifest()["activations"]


def _matmul_model(
    path: Path,
    weights: dict[str, np.ndarray],
    products: list[tuple[str, str]],
    opset: int = 17,
    rank: int = 3,
) -> Path:
    """Write a graph whose input ``x`` (``rank`` axes, the last K) is multiplied by constant
    weights: each ``(output, weight)`` of ``products`` is one MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = next(iter(weights.values())).shape[0]
    lead: list[int | None] = [None] * (rank - 1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", w], [y], name=f"mm_{y}") for y, w in products],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*lead, k])],
        [
            helper.make_tensor_value_info(y, TensorProto.FLOAT, [*lead, weights[w].shape[1]])
            for y, w in products
        ],
        [numpy_helper.from_array(v, name) for name, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


@pytest.mark.parametrize("opset", [17, 18])
def test_rowwise_matmul_on_a_tiny_graph_ignores_other_rows(opset: int, tmp_path: Path):
    import onnxruntime as ort

    from stream.build.rowwise import quantize_rowwise

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    _matmul_model(tmp_path / "f.onnx", {"w": w}, [("y", "w")], opset)
    quantize_rowwise(tmp_path / "f.onnx", tmp_path / "q.onnx")
    run = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run
    x = rng.normal(size=(1, 3, 8)).astype(np.float32)
    loud = 1000 * rng.normal(size=(1, 3, 8)).astype(np.float32)
    alone = run(None, {"x": x})[0]
    together = run(None, {"x": np.concatenate([x, loud])})[0]
    np.testing.assert_array_equal(together[:1], alone)  # the loud rows do not change its scale
    np.testing.assert_allclose(alone, x @ w, atol=0.05 * np.abs(x @ w).max())


def test_candidates_for_per_tensor_leave_out_every_per_token_one():
    from stream.build.export import candidates_for

    assert candidates_for() == CANDIDATES and candidates_for("per-token")[0].per_token
    fast = candidates_for("per-tensor")
    assert fast and not any(q.per_token for q in fast)
    assert [q for q in CANDIDATES if not q.per_token] == list(fast)


@settings(max_examples=25, deadline=None)
@given(picks=st.lists(st.integers(0, len(TEXTS) - 1), min_size=1, max_size=40))
def test_any_batch_composition_gives_each_text_its_alone_embedding(
    bundle: Bundle, picks: list[int]
):
    """Whatever shares its batch (order, repeats, long or short neighbours), a text of a
    per-token bundle gets the bits it gets alone: the label is a function of the text."""
    if not bundle.manifest.text_encoder.quantization.get("per_token"):
        pytest.skip("the bundle fell back to per-tensor int8")
    alone = _alone(bundle)
    batch = bundle.encoder.encode([TEXTS[i] for i in picks]).embeddings
    np.testing.assert_array_equal(batch, alone[picks])


_ALONE: dict[str, np.ndarray] = {}


def _alone(bundle: Bundle) -> np.ndarray:
    if bundle.sha256 not in _ALONE:
        _ALONE[bundle.sha256] = np.stack([bundle.encoder.encode([t]).embeddings[0] for t in TEXTS])
    return _ALONE[bundle.sha256]


def _reference(x: np.ndarray, w: np.ndarray, bits: str) -> np.ndarray:
    """The per-row formula of stream.build.rowwise, step by step in float32 numpy."""
    qmax_w, qmax_a, zero = (63.0, 127.0, 128.0) if bits == "w7" else (127.0, 63.0, 64.0)
    w_scale = (np.maximum(np.abs(w).max(axis=0), 1e-8) / qmax_w).astype(np.float32)
    wq = np.clip(np.round(w / w_scale), -qmax_w, qmax_w).astype(np.int32)
    rows = x.reshape(-1, x.shape[-1])
    s = (np.maximum(np.abs(rows).max(axis=1), np.float32(1e-8)) / np.float32(qmax_a)).astype(
        np.float32
    )
    q = (np.round(rows / s[:, None]) + np.float32(zero)).astype(np.int32)
    acc = (q - int(zero)) @ wq
    y = acc.astype(np.float32) * s[:, None] * w_scale[None, :]
    return y.reshape(*x.shape[:-1], w.shape[1])


def _tie_rows(bits: str) -> np.ndarray:
    """Rows whose scale is exactly 1 and whose values sit on .5: rounding half to even (ONNX
    Round, QuantizeLinear) and half away from zero disagree on each; plus an all-zero row."""
    qmax = 127.0 if bits == "w7" else 63.0
    ties = [
        qmax,
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        3.5,
        62.5,
        -62.5,
        0.0,
        1.0,
        -qmax,
        4.5,
        -4.5,
        5.5,
    ]
    return np.array([ties, [0.0] * 16], np.float32)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lead=st.sampled_from([(1, 1), (2, 5), (3, 1), (7, 2), (6,)]),
    bits=st.sampled_from(["w7", "a7"]),
    opset=st.sampled_from([17, 18]),
)
def test_the_fused_per_row_graph_computes_the_formula_bit_for_bit(
    seed: int,
    lead: tuple[int, ...],
    bits: str,
    opset: int,
    tmp_path_factory: pytest.TempPathFactory,
):
    """onnxruntime's per-axis QuantizeLinear and DequantizeLinear must do exactly the IEEE
    steps of the documented formula: a bundle's heads were fitted on those bits. Two weights
    read one activation (q, k, v do), one of them twice; 2-D and 3-D activations; rows with
    rounding ties and an all-zero row."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from stream.build.rowwise import quantize_rowwise

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(16, 6)).astype(np.float32)
    w2 = rng.normal(size=(16, 3)).astype(np.float32)
    x = (rng.normal(size=(*lead, 16)) * rng.uniform(0.01, 100)).astype(np.float32)
    x.reshape(-1, 16)[:2] = _tie_rows(bits)[: x.reshape(-1, 16).shape[0]]
    work = tmp_path_factory.mktemp("bits")
    products = [("y", "w"), ("y_again", "w"), ("y2", "w2")]
    _matmul_model(work / "f.onnx", {"w": w, "w2": w2}, products, opset, len(lead) + 1)
    quantize_rowwise(work / "f.onnx", work / "q.onnx", bits)  # type: ignore[arg-type]
    quantized = onnx.load(str(work / "q.onnx")).graph
    ops = [n.op_type for n in quantized.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("MatMulInteger") == 3
    # the zero point keeps AVX2's int16 pair sums in range: 2 x 191 x 127 would overflow
    zeros = {i.name: int(numpy_helper.to_array(i).ravel()[0]) for i in quantized.initializer}
    assert zeros["rw_zero_u8"] == zeros["rw_zero_row"] == (128 if bits == "w7" else 64)
    session = ort.InferenceSession(str(work / "q.onnx"), providers=["CPUExecutionProvider"])
    y, y_again, y2 = session.run(None, {"x": x})
    assert y.shape == (*lead, 6) and y2.shape == (*lead, 3)
    np.testing.assert_array_equal(y, _reference(x, w, bits))
    np.testing.assert_array_equal(y_again, y)
    np.testing.assert_array_equal(y2, _reference(x, w2, bits))


def test_an_empty_axis_keeps_its_shape(tmp_path: Path):
    """A batch of no rows (or rows of no tokens) comes back with its own shape, not one that
    Reshape's "0 copies the input dimension" made up."""
    import onnxruntime as ort

    from stream.build.rowwise import quantize_rowwise

    _matmul_model(tmp_path / "f.onnx", {"w": np.ones((4, 2), np.float32)}, [("y", "w")])
    quantize_rowwise(tmp_path / "f.onnx", tmp_path / "q.onnx")
    run = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run
    for shape in [(2, 0, 4), (0, 0, 4)]:
        assert run(None, {"x": np.zeros(shape, np.float32)})[0].shape == (*shape[:2], 2)
