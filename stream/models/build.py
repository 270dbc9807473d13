"""Build a text bundle (``crisis-stream models build``) from package-shipped weights.

The encoder is all-MiniLM-L6-v2 unless ``--encoder`` names another (:mod:`stream.models.encoders`).
Steps: when the CrisisMMD agreed splits are present, fine-tune the encoder on both tasks
(:mod:`stream.models.finetune`; ``$CRISIS_STREAM_FINETUNE=0`` skips it), export the encoder to ONNX
fp32, quantize it to int8 (checked against that fp32 export), copy the tokenizer (with
``drop_links``, one whose normaliser drops links), then one head per task: trained on the agreed
splits (with a TF-IDF baseline measured beside it) when the dataset is present, else zero-shot
label prototypes on the package encoder (so a machine without the data still gets a working bundle,
quickly). Everything is written into a staging directory next to ``out_dir``, loaded back with the
runtime's own loader, and only then moved into place: a worker watching ``out_dir`` never sees a
half-written bundle. Fine-tuning is seeded and deterministic (two runs give bit-identical weights:
tests/test_models.py), so model files should be identical across builds with the same package
versions on the same CPU kind; the manifest differs in measured speeds and build/fine-tuning
seconds.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.data.crisismmd import SPLITS, CrisisRow, load_split, split_path
from stream.errors import BundleError
from stream.models import export, fewshot, hybrid, tfidf, train
from stream.models.encoders import ENCODERS, EncoderChoice
from stream.models import finetune as finetune_mod
from stream.models.bundle import load_bundle, sha256_file
from stream.models.lexicon import Analysis, Lexicon, analyse_all
from stream.models.links import LINK_PATTERN

__all__ = ["BUNDLE_NAME", "BUNDLE_VERSION", "build_bundle"]

BUNDLE_NAME = ENCODERS["minilm"].bundle_name  # the default bundle
BUNDLE_VERSION = "0.1.0"
MAX_LENGTH = 128
INT8, FP32, TOKENIZER = "text_encoder.int8.onnx", "text_encoder.fp32.onnx", "tokenizer.json"
LEXICON = "lexicon.json"
DATA_NOTE = "CrisisMMD v2.0 agreed splits"
FINETUNE_ENV = "CRISIS_STREAM_FINETUNE"  # "0": heads on the frozen package encoder
_TOOLS = ("torch", "transformers", "onnx", "onnxruntime", "scikit-learn", "tokenizers")

Progress = Callable[[str], None]


def _encoder_section(
    stage: Path,
    check_texts: Sequence[str],
    check_note: str,
    progress: Progress,
    tokenizer: Path,
    model_dir: Path,
    model_id: str,
) -> dict[str, Any]:
    """Export (the package weights, or the fine-tuned ones, in ``model_dir``), quantize (first
    candidate meeting the cosine bar vs that fp32 export) and measure the text encoder."""
    diff = export.export_fp32(stage / FP32, model_dir)
    if diff > 1e-3:
        raise BundleError(f"ONNX export of {model_id} differs from torch by {diff:.2e}")
    shutil.copyfile(tokenizer, stage / TOKENIZER)
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
        "dim": int(ref.shape[1]),
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
    rows: Sequence[CrisisRow],
    table: np.ndarray,
    index: dict[str, int],
    labels: list[str],
    analyses: dict[str, Analysis],
) -> train.Split:
    return train.Split.of(
        table[[index[r.text] for r in rows]],
        [r.label for r in rows],
        labels,
        [analyses[r.text] for r in rows],
    )


def _held_out(
    rows: dict[tuple[str, str], list[CrisisRow]], every: dict[str, list[CrisisRow]] | None
) -> list[CrisisRow]:
    """Every dev/test row of the agreed splits (both tasks) and of the all-label informative
    split (``every``): no encoder or lexicon fitted for both tasks may see their texts."""
    held = [r for (_, s), rs in rows.items() if s != "train" for r in rs]
    if every is not None:
        held += every["dev"] + every["test"]
    return held


def _informative_all_metrics(
    head: train.HeadResult,
    every: dict[str, list[CrisisRow]],
    stage: Path,
    encoder: Path,
    labels: list[str],
    lexicon: Lexicon | None,
) -> dict[str, Any]:
    """The informative head (trained on the agreed split) on the all-label test split, and a
    TF-IDF baseline trained on the all-label train split (C on its dev split)."""
    test = every["test"]
    x = export.embed(encoder, stage / TOKENIZER, [r.text for r in test])
    analyses = analyse_all(lexicon, [r.text for r in test])
    measured = head.measure(
        {"test": train.Split.of(x, [r.label for r in test], labels, analyses)}
    )
    return {
        "note": "splits/informative_all: every tweet, not only those whose text and image "
        "labels agree; the head is the bundle's (trained on the agreed train split)",
        "test": _short(measured["test"]),
        "tfidf_baseline": tfidf.tfidf_baseline(
            labels, every["train"], every["dev"], {"test": test}
        ),
    }


def _trained_heads(
    stage: Path,
    data_dir: Path,
    encoder: Path,
    progress: Progress,
    ft_heads: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    baseline_tokenizer: Path | None = None,
) -> tuple[list[train.HeadResult], Lexicon]:
    """Heads trained on train, tuned on dev, measured on test (plus zero-shot and fp32-encoder
    figures for comparison), and the lexicon of the hybrid heads. Each distinct text is
    embedded once. With ``ft_heads`` (the fine-tuning heads) each task keeps whichever of the
    two has the better dev macro-F1 on the int8 embeddings; then :func:`hybrid.hybridize`.
    ``baseline_tokenizer``: the package MiniLM's, when the bundle's encoder is another model
    (the data-free baselines always run on the package MiniLM)."""
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
    every = _informative_all(data_dir)
    held = {r.text for r in _held_out(rows, every)}
    clean = sorted({r.text for (_, s), rs in rows.items() if s == "train" for r in rs} - held)
    lexicon = hybrid.fit_lexicon(clean)
    analyses = {t: lexicon.analyse(t) for t in texts}
    progress(f"lexicon: {lexicon.size} TF-IDF features from {len(clean)} train texts")
    # zero- and 16-shot prototypes on the package encoder: what a user gets with no training
    free = fewshot.data_free_baselines(
        baseline_tokenizer or stage / TOKENIZER,
        rows,
        progress,
        None if ft_heads is not None or baseline_tokenizer else encoder,
    )
    heads = []
    for task, labels in train.LABELS.items():
        splits = {s: _split(rows[(task, s)], table, index, labels, analyses) for s in SPLITS}
        head = train.train_head(task, labels, splits["train"], splits["dev"])
        selection = head.metrics["selection"]
        if ft_heads is not None:
            ft = train.fixed_head(task, labels, *ft_heads[task], splits["dev"])
            lr_dev = head.measure({"dev": splits["dev"]})["dev"]["macro_f1"]
            ft_dev = ft.measure({"dev": splits["dev"]})["dev"]["macro_f1"]
            selection["dev_macro_f1_by_head"] = {"logistic_regression": lr_dev, "finetuned": ft_dev}
            if ft_dev > lr_dev:
                ft.metrics["selection"] = {**selection, "C": None}
                head = ft
            selection["head"] = "finetuned" if head is ft else "logistic_regression"
        evals = {s: splits[s] for s in ("dev", "test")}
        encoder_only = {s: _short(m) for s, m in head.measure(evals).items()}
        head = hybrid.hybridize(head, lexicon, splits["train"], splits["dev"])
        head.metrics["hybrid"]["encoder_only"] = encoder_only
        head.metrics.update(head.measure(evals))
        fp32 = head.measure(
            {
                s: _split(rows[(task, s)], fp32_table, fp32_index, labels, analyses)
                for s in ("dev", "test")
            }
        )
        head.metrics["fp32_encoder"] = {s: _short(m) for s, m in fp32.items()}
        zs = zero_shot[task]
        head.metrics["zero_shot_baseline"] = {
            "scale": train.ZERO_SHOT_SCALE,
            "encoder": "the bundle's encoder ("
            + ("fine-tuned on the train splits: not data-free)" if ft_heads else "package)"),
            **{s: _short(m) for s, m in zs.measure(evals).items()},
        }
        head.metrics["rows"] = {s: len(rows[(task, s)]) for s in SPLITS}
        head.metrics["data_free"] = free[task]
        head.metrics["tfidf_baseline"] = tfidf.tfidf_baseline(
            labels, rows[(task, "train")], rows[(task, "dev")], {"test": rows[(task, "test")]}
        )
        if task == "informative" and every is not None:
            head.metrics["informative_all"] = _informative_all_metrics(
                head, every, stage, encoder, labels, lexicon
            )
        progress(
            f"head {task}: C={head.metrics['selection']['C']}, T={head.temperature:.3f}, "
            f"review<{head.review_threshold}; test acc {head.metrics['test']['accuracy']}, "
            f"macro-F1 {head.metrics['test']['macro_f1']} (fp32 encoder "
            f"{fp32['test']['macro_f1']}, zero-shot {head.metrics['zero_shot_baseline']['test']})"
        )
        heads.append(head)
    return heads, lexicon


def _informative_all(data_dir: Path) -> dict[str, list[CrisisRow]] | None:
    """The all-label informative splits (train/dev/test), or None when they are absent."""
    if not all(split_path(data_dir, "informative", s, "informative_all").is_file() for s in SPLITS):
        return None
    return {s: load_split(data_dir, "informative", s, "informative_all") for s in SPLITS}


def _finetune(
    data_dir: Path, work: Path, progress: Progress, tokenizer: Path, choice: EncoderChoice
) -> finetune_mod.FinetuneResult:
    """Fine-tune the encoder on both tasks' train splits (every dev/test text of the agreed
    and the all-label informative splits held out)."""
    rows = {(t, s): load_split(data_dir, t, s) for t in train.LABELS for s in SPLITS}
    held_out = _held_out(rows, _informative_all(data_dir))
    return finetune_mod.finetune(
        {t: rows[(t, "train")] for t in train.LABELS},
        {t: rows[(t, "dev")] for t in train.LABELS},
        held_out,
        train.LABELS,
        choice.locate(),
        work / "encoder",
        progress,
        choice.finetune,
        tokenizer=tokenizer,
    )


def _command(out_dir: Path, choice: EncoderChoice, drop_links: bool, image: bool) -> str:
    """The ``models build`` command line that rebuilds this bundle."""
    flags = "" if choice.key == "minilm" else f" --encoder {choice.key}"
    if drop_links != choice.drop_links:
        flags += " --drop-links" if drop_links else " --keep-links"
    flags += "" if image else " --no-image"
    return f"crisis-stream models build --out {out_dir}{flags}"


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
    finetune: bool | None = None,
    drop_links: bool | None = None,
    encoder: str = "minilm",
) -> Path:
    """Build a bundle into ``out_dir`` and return it.

    ``data_dir`` is the CrisisMMD directory (None: zero-shot heads); ``command`` is recorded as
    the build command (default: ``crisis-stream models build --out <out_dir>``); ``image`` also
    builds the image side (:func:`stream.models.image_assets.build_image_assets`);
    ``finetune`` fine-tunes the encoder on the data first (default: on when there is data,
    unless ``$CRISIS_STREAM_FINETUNE`` is ``0``); ``drop_links`` gives the encoder a tokenizer
    that drops links (:mod:`stream.models.links`): ~3x the encoder's speed on tweets, but
    humanitarian dev macro-F1 fell 0.010, so it is opt-in for MiniLM (default: the encoder's
    own choice); ``encoder`` is a key of :data:`stream.models.encoders.ENCODERS`.
    """
    if encoder not in ENCODERS:
        raise BundleError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    choice = ENCODERS[encoder]
    if drop_links is None:
        drop_links = choice.drop_links
    if finetune is None:
        finetune = os.environ.get(FINETUNE_ENV, "1") != "0"
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    stage = out_dir.with_name(f".{out_dir.name}.partial")
    _remove(stage)
    stage.mkdir(parents=True)
    work = tempfile.TemporaryDirectory(prefix="crisis-ft-")
    try:
        source = choice.locate()
        tokenizer = Path(work.name) / TOKENIZER
        if drop_links:
            export.write_tokenizer(tokenizer, source / TOKENIZER)
        else:
            shutil.copyfile(source / TOKENIZER, tokenizer)
        tuned = None
        if data_dir is not None and finetune:
            tuned = _finetune(data_dir, Path(work.name), progress, tokenizer, choice)
        section = _encoder_section(
            stage,
            *_check_texts(data_dir),
            progress,
            tokenizer,
            tuned.model_dir if tuned else source,
            choice.model_id,
        )
        if drop_links:
            section["preprocessing"] = f"links ({LINK_PATTERN}) removed by the tokenizer"
        if tuned is not None:
            section["fine_tuning"] = tuned.manifest
        onnx_file = stage / section["files"][section["precision"]]
        lexicon = None
        if data_dir is not None:
            baseline_tokenizer = None
            if choice.key != "minilm":
                baseline_tokenizer = export.source_model_dir() / TOKENIZER
            heads, lexicon = _trained_heads(
                stage,
                data_dir,
                onnx_file,
                progress,
                tuned.heads if tuned else None,
                baseline_tokenizer,
            )
        else:
            heads = _zero_shot_heads(stage, onnx_file)
            progress("no CrisisMMD data: zero-shot heads from label descriptions")
        for head in heads:
            train.save_head(stage / f"head_{head.task}.npz", head.weight, head.bias, head.lexical)
        if lexicon is not None and any(h.lexical is not None for h in heads):
            lexicon.save(stage / LEXICON)
        manifest: dict[str, Any] = {
            "format": 1,
            "name": choice.bundle_name,
            "version": BUNDLE_VERSION,
            "build_command": command or _command(out_dir, choice, drop_links, image),
            "built_from": {
                "text": choice.describe(),
                "data": DATA_NOTE if data_dir is not None else None,
                "tools": _tools(),
            },
            "text_encoder": section,
            "heads": [h.spec(f"head_{h.task}.npz") for h in heads],
        }
        if (stage / LEXICON).exists():
            manifest["lexicon"] = LEXICON
        _write_manifest(stage, manifest)
        bundle = load_bundle(stage)  # the runtime's own checks: schema, hashes, shapes
        if image:
            from stream.models.image_assets import build_image_assets

            result = build_image_assets(
                stage, bundle.encoder, bundle.heads, progress, data_dir, lexicon=bundle.lexicon
            )
            manifest["image_encoder"] = result["image_encoder"]
            _write_manifest(stage, manifest)
            load_bundle(stage)
        manifest["build_seconds"] = round(time.perf_counter() - t0, 1)
        _write_manifest(stage, manifest)
        _replace(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        work.cleanup()
    progress(f"bundle {choice.bundle_name} {BUNDLE_VERSION} built in {time.perf_counter() - t0:.0f}s")
    return out_dir
