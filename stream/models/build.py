"""Build the default text bundle (``crisis-stream models build``) from package-shipped weights.

Steps: export all-MiniLM-L6-v2 to ONNX fp32, quantize it to int8 (checked against fp32), copy
the tokenizer, then one head per task: trained on the CrisisMMD agreed splits when the dataset
is present, else zero-shot label prototypes (so a machine without the data still gets a working
bundle). Everything is written into a staging directory next to ``out_dir``, loaded back with
the runtime's own loader, and only then moved into place: a worker watching ``out_dir`` never
sees a half-written bundle. Model files are byte-identical across builds with the same package
versions; the manifest differs only in measured speeds and build time.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.data.crisismmd import SPLITS, CrisisRow, load_split
from stream.errors import BundleError
from stream.models import export, train
from stream.models.bundle import load_bundle, sha256_file

__all__ = ["BUNDLE_NAME", "BUNDLE_VERSION", "build_bundle"]

BUNDLE_NAME = "minilm-crisis"
BUNDLE_VERSION = "0.1.0"
MAX_LENGTH = 128
DIM = 384
INT8, FP32, TOKENIZER = "text_encoder.int8.onnx", "text_encoder.fp32.onnx", "tokenizer.json"
DATA_NOTE = "CrisisMMD v2.0 agreed splits"
_TOOLS = ("torch", "transformers", "onnx", "onnxruntime", "scikit-learn", "tokenizers")

Progress = Callable[[str], None]


def _encoder_section(
    stage: Path, check_texts: Sequence[str], check_note: str, progress: Progress
) -> dict[str, Any]:
    """Export, quantize (first candidate meeting the cosine bar) and measure the text encoder."""
    diff = export.export_fp32(stage / FP32)
    if diff > 1e-3:
        raise BundleError(f"ONNX export of all-MiniLM-L6-v2 differs from torch by {diff:.2e}")
    shutil.copyfile(export.source_model_dir() / TOKENIZER, stage / TOKENIZER)
    progress(f"text encoder exported to ONNX fp32 (max |onnx - torch| = {diff:.1e})")
    ref = export.embed(stage / FP32, stage / TOKENIZER, check_texts)
    tried: list[dict[str, Any]] = []
    for q in export.CANDIDATES:
        export.quantize_int8(stage / FP32, stage / INT8, q)
        cos = export.cosine_stats(export.embed(stage / INT8, stage / TOKENIZER, check_texts), ref)
        tried.append({"config": q.name, "cosine_vs_fp32": cos})
        if cos["min"] >= export.COSINE_BAR:
            break
        progress(f"int8 {q.name}: min cosine {cos['min']} < {export.COSINE_BAR}, next candidate")
    passed = tried[-1]["cosine_vs_fp32"]["min"] >= export.COSINE_BAR
    precision = "int8" if passed else "fp32"
    speed = {
        name: export.throughput(stage / file, stage / TOKENIZER, check_texts, 32, 1.0, 2)
        for name, file in (("int8", INT8), ("fp32", FP32))
    }
    progress(
        f"int8 {q.name}: cosine vs fp32 {tried[-1]['cosine_vs_fp32']}, texts/s {speed}"
        + ("" if passed else f"; no candidate met {export.COSINE_BAR}: serving fp32")
    )
    quantization = {
        **q.as_manifest(),
        "tool": f"onnxruntime.quantization.quantize_dynamic {metadata.version('onnxruntime')}",
        "cosine_vs_fp32": {**tried[-1]["cosine_vs_fp32"], "texts": check_note},
        "cosine_bar": export.COSINE_BAR,
        "candidates_tried": tried,
        "texts_per_s_batch32": speed,
        "why": "first of export.CANDIDATES (QInt8 per-channel; with the FFN output MatMuls in "
        "fp32; with reduce_range; QUInt8 per-channel: fastest first, as measured) whose min "
        "cosine vs fp32 on the check texts meets the bar; per-tensor weights reach only ~0.90",
        "export": {"opset": export.OPSET, "max_abs_diff_vs_torch": float(f"{diff:.3g}")},
    }
    return {
        "files": {"int8": INT8, "fp32": FP32},
        "precision": precision,
        "tokenizer": TOKENIZER,
        "max_length": MAX_LENGTH,
        "dim": DIM,
        "pooling": "mean",
        "normalize": True,
        "quantization": quantization,
    }


def _check_texts(data_dir: Path | None) -> tuple[list[str], str]:
    """Texts the int8 encoder is checked on, and what they are: a fixed sample of real tweets
    (informative dev split) when the dataset is here, plus the built-in samples."""
    texts = list(export.SAMPLE_TEXTS)
    if data_dir is None:
        return texts, f"{len(texts)} built-in sample texts"
    dev = [r.text for r in load_split(data_dir, "informative", "dev")]
    sample = random.Random(0).sample(dev, min(256, len(dev)))
    return sample + texts, f"{len(sample)} CrisisMMD dev tweets + {len(texts)} built-in samples"


def _short(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "ece", "n", "auto_share")}


def _zero_shot_heads(stage: Path, encoder: Path) -> list[train.HeadResult]:
    """One prototype head per task from the label descriptions, embedded by ``encoder``."""
    heads = []
    for task, labels in train.LABELS.items():
        desc = train.DESCRIPTIONS[task]
        emb = export.embed(encoder, stage / TOKENIZER, [desc[name] for name in labels])
        heads.append(train.zero_shot_head(task, labels, desc, emb))
    return heads


def _split(
    rows: Sequence[CrisisRow], table: np.ndarray, index: dict[str, int], labels: list[str]
) -> train.Split:
    return train.Split.of(table[[index[r.text] for r in rows]], [r.label for r in rows], labels)


def _trained_heads(
    stage: Path, data_dir: Path, encoder: Path, progress: Progress
) -> list[train.HeadResult]:
    """Heads trained on train, tuned on dev, measured on test (plus zero-shot and fp32-encoder
    figures for comparison). Each distinct text is embedded once."""
    rows = {
        (task, split): load_split(data_dir, task, split)
        for task in train.LABELS
        for split in SPLITS
    }
    texts = sorted({r.text for split_rows in rows.values() for r in split_rows})
    progress(f"embedding {len(texts)} distinct CrisisMMD texts with the int8 encoder")
    t0 = time.perf_counter()
    table = export.embed(encoder, stage / TOKENIZER, texts)
    index = {t: i for i, t in enumerate(texts)}
    progress(f"embedded in {time.perf_counter() - t0:.0f}s")
    eval_texts = sorted({r.text for (_, s), rs in rows.items() if s != "train" for r in rs})
    fp32_table = export.embed(stage / FP32, stage / TOKENIZER, eval_texts)
    fp32_index = {t: i for i, t in enumerate(eval_texts)}
    progress(f"embedded {len(eval_texts)} dev/test texts with fp32 (int8 vs fp32 comparison)")
    zero_shot = {h.task: h for h in _zero_shot_heads(stage, encoder)}
    heads = []
    for task, labels in train.LABELS.items():
        splits = {s: _split(rows[(task, s)], table, index, labels) for s in SPLITS}
        head = train.train_head(task, labels, splits["train"], splits["dev"])
        evals = {s: splits[s] for s in ("dev", "test")}
        head.metrics.update(head.measure(evals))
        fp32 = head.measure(
            {s: _split(rows[(task, s)], fp32_table, fp32_index, labels) for s in ("dev", "test")}
        )
        head.metrics["fp32_encoder"] = {s: _short(m) for s, m in fp32.items()}
        zs = zero_shot[task]
        head.metrics["zero_shot_baseline"] = {
            "scale": train.ZERO_SHOT_SCALE,
            **{s: _short(m) for s, m in zs.measure(evals).items()},
        }
        head.metrics["rows"] = {s: len(rows[(task, s)]) for s in SPLITS}
        progress(
            f"head {task}: C={head.metrics['selection']['C']}, T={head.temperature:.3f}, "
            f"review<{head.review_threshold}; test acc {head.metrics['test']['accuracy']}, "
            f"macro-F1 {head.metrics['test']['macro_f1']} (fp32 encoder "
            f"{fp32['test']['macro_f1']}, zero-shot {head.metrics['zero_shot_baseline']['test']})"
        )
        heads.append(head)
    return heads


def _tools() -> dict[str, str]:
    out = {}
    for name in _TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _write_manifest(stage: Path, manifest: dict[str, Any]) -> None:
    manifest["files"] = {
        p.name: sha256_file(p)
        for p in sorted(stage.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }
    (stage / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _replace(stage: Path, out_dir: Path) -> None:
    """Move the finished bundle into ``out_dir`` (replacing an older bundle there, never a
    directory that holds something else; a symlink there is replaced, not followed)."""
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists():
        raise BundleError(f"{out_dir} is not empty and not a bundle; refusing to replace it")
    old = out_dir.with_name(f".{out_dir.name}.old")
    _remove(old)
    if out_dir.exists() or out_dir.is_symlink():
        out_dir.rename(old)
    stage.rename(out_dir)
    _remove(old)


def build_bundle(
    out_dir: Path,
    data_dir: Path | None,
    progress: Progress,
    *,
    command: str | None = None,
    image: bool = False,
) -> Path:
    """Build the default bundle into ``out_dir`` and return it.

    ``data_dir`` is the CrisisMMD directory (None: zero-shot heads); ``command`` is recorded as
    the build command (default: ``crisis-stream models build --out <out_dir>``); ``image`` also
    builds the image side (:func:`stream.models.image_assets.build_image_assets`).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    stage = out_dir.with_name(f".{out_dir.name}.partial")
    _remove(stage)
    stage.mkdir(parents=True)
    try:
        section = _encoder_section(stage, *_check_texts(data_dir), progress)
        encoder = stage / section["files"][section["precision"]]
        if data_dir is not None:
            heads = _trained_heads(stage, data_dir, encoder, progress)
        else:
            heads = _zero_shot_heads(stage, encoder)
            progress("no CrisisMMD data: zero-shot heads from label descriptions")
        for head in heads:
            train.save_head(stage / f"head_{head.task}.npz", head.weight, head.bias)
        manifest: dict[str, Any] = {
            "format": 1,
            "name": BUNDLE_NAME,
            "version": BUNDLE_VERSION,
            "build_command": command or f"crisis-stream models build --out {out_dir}",
            "built_from": {
                "text": export.source_description(),
                "data": DATA_NOTE if data_dir is not None else None,
                "tools": _tools(),
            },
            "text_encoder": section,
            "heads": [h.spec(f"head_{h.task}.npz") for h in heads],
        }
        _write_manifest(stage, manifest)
        bundle = load_bundle(stage)  # the runtime's own checks: schema, hashes, shapes
        if image:
            from stream.models.image_assets import build_image_assets

            result = build_image_assets(stage, bundle.encoder, bundle.heads, progress, data_dir)
            manifest["image_encoder"] = result["image_encoder"]
            _write_manifest(stage, manifest)
            load_bundle(stage)
        manifest["build_seconds"] = round(time.perf_counter() - t0, 1)
        _write_manifest(stage, manifest)
        _replace(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    progress(f"bundle {BUNDLE_NAME} {BUNDLE_VERSION} built in {time.perf_counter() - t0:.0f}s")
    return out_dir
