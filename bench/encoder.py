"""Encoder throughput: texts/s per configuration (int8 vs fp32 by batch size, efficiency knobs
at batch 32), as ratios.

Baseline: the shipped TextEncoder (int8, its default session, length-sorted batches of 32).
Everything else is reported relative to it, measured interleaved in the same process.

    .venv/bin/python bench/encoder.py          # ~1-2 minutes
    .venv/bin/python bench/encoder.py --full   # more texts and rounds
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import BUNDLE, crisis_texts, interleaved_ratios, table, unique_texts
from tokenizers import Encoding

from stream.build.export import CANDIDATES, quantize_int8
from stream.models.bundle import read_manifest
from stream.models.text import TextEncoder, encoder_feeds

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(
    path: Path, threads: int | None, level: str = "all", spin: bool = False
) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[level]
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def runner(enc: TextEncoder, texts: Sequence[str], batch: int, padding: str) -> Callable[[], int]:
    """Tokenise + run ``texts`` in batches; ``padding``: ``sorted`` (length-sorted batches, what
    TextEncoder does), ``arrival`` (batches in arrival order, padded to their longest) or
    ``max`` (every row padded to max_length=128)."""
    names = {i.name for i in enc.session.get_inputs()}

    def run_batch(encs: Sequence[Encoding]) -> None:
        width = 128 if padding == "max" else None
        enc.session.run(None, encoder_feeds(encs, names, width))

    def go() -> int:
        if padding == "sorted":
            enc.encode(texts)  # the real code path, pooling included
            return len(texts)
        encs = enc.tokenize(texts)
        for s in range(0, len(encs), batch):
            run_batch(encs[s : s + batch])
        return len(texts)

    return go


def per_tensor_model(fp32: Path, work: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = work / "text_encoder.int8.per_tensor.onnx"
    if not out.exists():
        logging.getLogger().setLevel(logging.ERROR)
        quantize_dynamic(str(fp32), str(out), per_channel=False, weight_type=QuantType.QInt8)
    return out


def qdq_model(fp32: Path, work: Path, enc: TextEncoder, calib: Sequence[str]) -> Path:
    """Static QDQ int8 (per-channel weights, u8 activations, MinMax ranges) calibrated on
    ``calib`` (train texts, never the measured dev texts), in batches of 8."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    out = work / "text_encoder.int8.qdq.onnx"
    if out.exists():
        return out
    names = {i.name for i in enc.session.get_inputs()}
    encs = enc.tokenize(calib)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(range(0, len(encs), 8))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.batches, None)
            if start is None:
                return None
            return encoder_feeds(encs[start : start + 8], names)

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def cosine_vs(ref: TextEncoder, other: TextEncoder, texts: Sequence[str]) -> tuple[float, float]:
    """(min, mean) cosine of ``other``'s pooled embeddings to ``ref``'s on ``texts``."""
    a, b = ref.encode(texts).embeddings, other.encode(texts).embeddings
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), float(cos.mean())


def image_section(bundle: Path, rounds: int, min_s: float) -> None:
    """The image encoder: int8 vs fp32 by batch size, on 64 224x224 crops of the
    scikit-learn sample photos (pixel content does not change the cost of a CNN)."""
    from sklearn.datasets import load_sample_images

    from stream.models.image import ImageEncoder

    spec = read_manifest(bundle).image_encoder
    if spec is None:
        print("image encoder: this bundle has none (manifest.image_encoder is null) - skipped\n")
        return
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    pixels = []
    for k in range(64):
        img = photos[k % len(photos)]
        y, x = rng.integers(0, img.shape[0] - 224), rng.integers(0, img.shape[1] - 224)
        pixels.append(np.ascontiguousarray(img[y : y + 224, x : x + 224]))
    configs: dict[str, Callable[[], int]] = {}
    precs = sorted(spec.files)
    for prec in precs:
        for b in (1, 8, 32, 64):
            enc = ImageEncoder(bundle / spec.files[prec], None, b)

            def run(enc: ImageEncoder = enc) -> int:
                return len(enc.encode(pixels).logits)

            configs[f"{prec} b{b}"] = run
    base = f"{spec.precision} b{16 if f'{spec.precision} b16' in configs else 8}"
    q, r = interleaved_ratios(configs, base, rounds, min_s)
    rows = []
    for b in (1, 8, 32, 64):
        cells = [q[f"{p} b{b}"] for p in precs]
        ratio = q[f"int8 b{b}"] / q[f"fp32 b{b}"] if {"int8", "fp32"} <= set(precs) else "-"
        rows.append([b, *cells, ratio, " / ".join(f"{r[f'{p} b{b}']:.1f}" for p in precs)])
    print(f"Image encoder (bundle default {spec.precision}), ratios vs {base}")
    print(
        table(
            ["batch", *(f"{p} / {base}" for p in precs), "int8 / fp32", "images/s (context)"],
            rows,
        )
    )
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="512 texts, 7 rounds")
    ap.add_argument("--bundle", type=Path, default=BUNDLE)
    ap.add_argument("--skip-per-tensor", action="store_true")
    ap.add_argument("--skip-qdq", action="store_true", help="skip the static QDQ calibration")
    args = ap.parse_args()
    n, rounds, min_s = (512, 7, 1.5) if args.full else (128, 4, 0.3)
    texts = unique_texts(crisis_texts(["dev"]))[:n]
    man = read_manifest(args.bundle)
    spec = man.text_encoder
    tok = args.bundle / spec.tokenizer
    files = {p: args.bundle / f for p, f in spec.files.items()}

    def make(prec: str, batch: int, threads: int | None = None, **kw: object) -> TextEncoder:
        enc = TextEncoder(files[prec], tok, spec.max_length, threads, batch)
        if kw or threads:
            enc.session = session(files[prec], threads, **kw)  # type: ignore[arg-type]
        return enc

    print(
        f"{len(texts)} CrisisMMD dev texts, {rounds} interleaved rounds, median per-round ratio\n"
    )

    # -- int8 vs fp32 by batch size -----------------------------------------------------
    configs: dict[str, Callable[[], int]] = {}
    for prec in ("int8", "fp32"):
        for b in (1, 8, 32, 64):
            configs[f"{prec} b{b}"] = runner(make(prec, b), texts, b, "sorted")
    q, r = interleaved_ratios(configs, "int8 b32", rounds, min_s)
    rows = []
    for b in (1, 8, 32, 64):
        i8, f32 = q[f"int8 b{b}"], q[f"fp32 b{b}"]
        rows.append([b, i8, f32, i8 / f32, f"{r[f'int8 b{b}']:.0f} / {r[f'fp32 b{b}']:.0f}"])
    print("Text encoder, int8 vs fp32 (ratios vs int8 batch 32; length-sorted batches)")
    print(
        table(
            [
                "batch",
                "int8 / int8@32",
                "fp32 / int8@32",
                "int8 / fp32",
                "texts/s int8 / fp32 (context)",
            ],
            rows,
        )
    )
    best_b = max((1, 8, 32, 64), key=lambda b: q[f"int8 b{b}"])
    print(f"\nfastest int8 batch size here: {best_b}")
    print()
    image_section(args.bundle, rounds, min_s)

    # -- efficiency knobs at batch 32 ---------------------------------------------------
    shipped = "shipped (threads=ORT default, spinning off, all, sorted)"
    eff: dict[str, Callable[[], int]] = {
        shipped: runner(make("int8", 32), texts, 32, "sorted"),
        "spinning on (previous default)": runner(
            make("int8", 32, None, spin=True), texts, 32, "sorted"
        ),
        "intra_op threads=1": runner(make("int8", 32, 1), texts, 32, "sorted"),
        "intra_op threads=2": runner(make("int8", 32, 2), texts, 32, "sorted"),
        "threads=1, spinning on": runner(make("int8", 32, 1, spin=True), texts, 32, "sorted"),
        "opt level basic": runner(make("int8", 32, None, level="basic"), texts, 32, "sorted"),
        "opt level extended": runner(make("int8", 32, None, level="extended"), texts, 32, "sorted"),
        "batches in arrival order": runner(make("int8", 32), texts, 32, "arrival"),
        "pad to max_length 128, b32": runner(make("int8", 32), texts, 32, "max"),
        "pad to max_length 128, b1": runner(make("int8", 1), texts, 1, "max"),
    }
    work = Path(tempfile.gettempdir()) / "crisis-bench"
    work.mkdir(exist_ok=True)
    if not args.skip_per_tensor:
        pt = per_tensor_model(files["fp32"], work)
        pt_enc = TextEncoder(pt, tok, spec.max_length, None, 32)
        eff["per-tensor int8 weights"] = runner(pt_enc, texts, 32, "sorted")
    # the other kind of dynamic int8: per-tensor activations (quantize_dynamic) when the
    # bundle ships per-token, per-token (stream.build.rowwise) when it ships per-tensor
    shipped_per_token = bool(spec.quantization.get("per_token"))
    other_q = next(q for q in CANDIDATES if q.per_token != shipped_per_token and not q.smooth)
    other_path = work / f"text_encoder.{other_q.name}.onnx"
    quantize_int8(files["fp32"], other_path, other_q, tok)
    other_enc = TextEncoder(other_path, tok, spec.max_length, None, 32)
    other_name = f"{other_q.name} ({'per-tensor' if shipped_per_token else 'per-token'} int8)"
    eff[other_name] = runner(other_enc, texts, 32, "sorted")
    qdq_enc: TextEncoder | None = None
    if not args.skip_qdq:
        calib = unique_texts(crisis_texts(["train"]))[:256]
        qdq = qdq_model(files["fp32"], work, make("fp32", 32), calib)
        qdq_enc = TextEncoder(qdq, tok, spec.max_length, None, 32)
        eff["QDQ static int8 (per-channel, u8 activations)"] = runner(qdq_enc, texts, 32, "sorted")
    q2, r2 = interleaved_ratios(eff, shipped, rounds, min_s)
    print("Text encoder efficiency, int8, batch 32 (ratio vs the shipped configuration)")
    print(
        table(
            ["configuration", "ratio", "texts/s (context)"],
            [[k, q2[k], f"{v:.0f}"] for k, v in r2.items()],
        )
    )
    fp32 = make("fp32", 32)
    rows = [["dynamic int8 (shipped)", *cosine_vs(fp32, make("int8", 32), texts)]]
    rows.append([other_name, *cosine_vs(fp32, other_enc, texts)])
    if qdq_enc is not None:
        rows.append(["QDQ static int8", *cosine_vs(fp32, qdq_enc, texts)])
    print("\nEmbedding cosine to fp32 on the same texts (the bundle's bar: min >= 0.98)")
    print(table(["quantization", "min cosine", "mean cosine"], rows))
    alone = [["shipped", batch_drift(make("int8", 32), texts)]]
    alone.append([other_name, batch_drift(other_enc, texts)])
    print("\nA text encoded alone vs in its batch of 32: max |embedding difference|")
    print(table(["quantization", "max abs diff"], alone))


def batch_drift(enc: TextEncoder, texts: Sequence[str]) -> float:
    """Largest element-wise change of a text's embedding between batch 32 and alone."""
    together = enc.encode(texts).embeddings
    single = np.stack([enc.encode([t]).embeddings[0] for t in texts])
    return float(np.abs(together - single).max())


if __name__ == "__main__":
    main()
