"""Build a text bundle (``crisis-stream models build``) from package-shipped weights.

The encoder is multilingual-e5-small unless ``--encoder`` names another
(:mod:`stream.build.encoders`). Steps: with ``finetune`` and the data present, fine-tune the
encoder (across events, :mod:`stream.build.event_finetune`, or on CrisisMMD's splits); export
it to ONNX fp32, quantize it to int8 (checked against that fp32 export), copy the tokenizer
(with ``drop_links``, one whose normaliser drops links), then one head per task: fitted across
events (or on CrisisMMD's agreed splits) when the data is present, else zero-shot label
prototypes (so a machine without the data still gets a working bundle, quickly). Everything is
written into a staging directory next to ``out_dir``, loaded back with the runtime's own
loader, and only then moved into place: a worker watching ``out_dir`` never sees a
half-written bundle. Fine-tuning is seeded and deterministic (two runs give bit-identical
weights: tests/test_models.py), so model files should be identical across builds with the same
package versions on the same CPU kind; the manifest differs in measured speeds and seconds.
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
from typing import Any, Literal

import orjson

from stream.build import export, smooth, train
from stream.build import finetune as finetune_mod
from stream.build.corpus_heads import corpus_heads, training_summary
from stream.build.encoders import ENCODERS, EncoderChoice
from stream.build.event_finetune import finetune_across_events
from stream.build.fit_heads import held_out, informative_all, trained_heads, zero_shot_heads
from stream.build.model_card import CARD, render_card
from stream.build.pooling import Pooling, pooling_manifest, resolve_pooling, stage_skip
from stream.data.corpus import load_corpus
from stream.data.crisismmd import SPLITS, load_split
from stream.errors import BundleError
from stream.models import selfcheck
from stream.models.bundle import Bundle, load_bundle, sha256_file
from stream.models.function_words import FunctionWords
from stream.models.lexicon import Lexicon
from stream.models.links import LINK_PATTERN
from stream.ops.cpu import cpu_model

__all__ = [
    "BUNDLE_NAME",
    "BUNDLE_VERSION",
    "DEFAULT_ENCODER",
    "HeadsFrom",
    "Pooling",
    "build_bundle",
]

DEFAULT_ENCODER = "e5"  # multilingual: a crisis is tweeted in its own languages
BUNDLE_NAME = ENCODERS[DEFAULT_ENCODER].bundle_name  # the default bundle
BUNDLE_VERSION = "0.1.0"
MAX_LENGTH = 128
INT8, FP32, TOKENIZER = "text_encoder.int8.onnx", "text_encoder.fp32.onnx", "tokenizer.json"
LEXICON = "lexicon.json"
DATA_NOTE = "CrisisMMD v2.0 agreed splits"
CORPUS_SOURCES = ("crisismmd", "crisislex_t26", "figure8")  # read beside the CrisisMMD folder
HeadsFrom = Literal["corpus", "crisismmd"]
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
    calibration: Sequence[str] = export.SAMPLE_TEXTS,
    candidates: Sequence[export.Quantization] = export.CANDIDATES,
    skip: FunctionWords | None = None,
) -> dict[str, Any]:
    """Export (the package weights, or the fine-tuned ones, in ``model_dir``), quantize (first
    candidate meeting the cosine bar vs that fp32 export) and measure the text encoder.
    ``calibration``: texts a smoothed candidate measures activations on (train tweets);
    ``skip``: content pooling's function words (the self-check pools as the runtime will)."""
    diff = export.export_fp32(stage / FP32, model_dir)
    if diff > 1e-3:
        raise BundleError(f"ONNX export of {model_id} differs from torch by {diff:.2e}")
    shutil.copyfile(tokenizer, stage / TOKENIZER)
    progress(f"text encoder exported to ONNX fp32 (max |onnx - torch| = {diff:.1e})")
    tried, q, ref = export.first_passing(
        stage / FP32,
        stage / INT8,
        stage / TOKENIZER,
        check_texts,
        calibration,
        candidates,
        skip,
        progress,
    )
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
        "tool": "stream.build.rowwise (per-row QuantizeLinear, MatMulInteger), onnxruntime "
        f"{metadata.version('onnxruntime')}"
        if q.per_token
        else f"onnxruntime.quantization.quantize_dynamic {metadata.version('onnxruntime')}",
        "cosine_vs_fp32": {**tried[-1]["cosine_vs_fp32"], "texts": check_note},
        "cosine_bar": export.COSINE_BAR,
        "candidates_tried": tried,
        "texts_per_s_batch32": speed,
        "why": "first of export.CANDIDATES whose min cosine vs fp32 on the check texts meets "
        "the bar: per-token activations first (a text's label cannot depend on its batch "
        "companions), plain, then smoothed, then smoothed with fp32 FFN outputs; then "
        "quantize_dynamic's per-tensor activations as fallbacks (QInt8 per-channel; fp32 FFN "
        "outputs; reduce_range; QUInt8; smoothed): per-tensor weights reach only ~0.90",
        "export": {"opset": export.OPSET, "max_abs_diff_vs_torch": float(f"{diff:.3g}")},
    }
    if q.smooth:
        quantization["calibration"] = (
            f"{len(calibration)} seeded train tweets, SmoothQuant alpha {smooth.ALPHA}"
        )
    section: dict[str, Any] = {}
    if passed:
        rows = [list(check_texts).index(t) for t in export.SAMPLE_TEXTS]  # fp32, embedded above
        selfcheck.write_reference(stage / selfcheck.CHECK_FILE, export.SAMPLE_TEXTS, ref[rows])
        section["self_check"] = {
            "file": selfcheck.CHECK_FILE,
            "bar": export.COSINE_BAR,
            "texts": len(export.SAMPLE_TEXTS),
            "why": "the worker re-encodes these texts with int8 at load and serves fp32 below "
            "the bar: int8 kernels differ by CPU instruction set",
        }
    return {
        "files": {"int8": INT8, "fp32": FP32},
        "precision": precision,
        "tokenizer": TOKENIZER,
        "max_length": MAX_LENGTH,
        "dim": int(ref.shape[1]),
        **pooling_manifest(skip),
        "normalize": True,
        "quantization": quantization,
        **section,
    }


def _calibration_texts(data_dir: Path | None) -> list[str]:
    """What a smoothed int8 candidate calibrates on: 256 informative *train* tweets (seeded),
    or the built-in samples without data."""
    if data_dir is None:
        return list(export.SAMPLE_TEXTS)
    train_texts = sorted({r.text for r in load_split(data_dir, "informative", "train")})
    return random.Random(0).sample(train_texts, min(256, len(train_texts)))


def _finetune(
    data_dir: Path,
    work: Path,
    progress: Progress,
    tokenizer: Path,
    choice: EncoderChoice,
    heads: HeadsFrom,
) -> finetune_mod.FinetuneResult:
    """Fine-tune the encoder: across every event of the corpus for heads across events
    (:mod:`stream.build.event_finetune`), else on both tasks' CrisisMMD train splits; every
    dev/test text of the agreed and the all-label informative splits held out either way."""
    if heads == "corpus":
        corpus = load_corpus(data_dir.parent, CORPUS_SOURCES)
        return finetune_across_events(corpus.messages, choice.locate(), tokenizer, work, progress)
    rows = {(t, s): load_split(data_dir, t, s) for t in train.LABELS for s in SPLITS}
    held = held_out(rows, informative_all(data_dir))
    return finetune_mod.finetune(
        {t: rows[(t, "train")] for t in train.LABELS},
        {t: rows[(t, "dev")] for t in train.LABELS},
        held,
        train.LABELS,
        choice.locate(),
        work / "encoder",
        progress,
        choice.finetune,
        tokenizer=tokenizer,
    )


def _command(
    out_dir: Path,
    choice: EncoderChoice,
    drop_links: bool,
    image: bool,
    activations: export.Activations = "per-token",
    heads: HeadsFrom = "corpus",
    finetune: bool = False,
    pooling: Pooling = "mean_content",
    layers: int | None = None,
    tuned: bool = True,
) -> str:
    """The ``models build`` command line that rebuilds this bundle (``tuned``: whether the
    fine-tuning ran; without data it does not)."""
    flags = "" if choice.key == DEFAULT_ENCODER else f" --encoder {choice.key}"
    if drop_links != choice.drop_links:
        flags += " --drop-links" if drop_links else " --keep-links"
    flags += "" if image else " --no-image"
    flags += "" if activations == "per-token" else f" --int8-activations {activations}"
    flags += "" if heads == "corpus" else f" --heads {heads}"
    flags += " --finetune" if finetune else ""
    if pooling != resolve_pooling(None, finetune, heads):
        flags += f" --pooling {pooling}"
    if layers is not None and layers != _default_layers(choice, finetune and tuned, heads):
        flags += f" --layers {layers}"
    return f"crisis-stream models build --out {out_dir}{flags}"


def _machine() -> dict[str, Any]:
    """The build CPU: int8 kernels differ by instruction set (AVX2 vs AVX-512 VNNI / AMX), and
    the heads are fitted on that CPU's int8 embeddings, so test figures move with it
    (README, Models)."""
    model, flags = cpu_model()
    isa = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})
    return {"cpu": model, "isa": isa, "cores": os.cpu_count()}


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


def _resolve_options(
    encoder: str, drop_links: bool | None, finetune: bool | None
) -> tuple[EncoderChoice, bool, bool]:
    """The encoder choice, and whether to drop links and to fine-tune (defaults applied)."""
    if encoder not in ENCODERS:
        raise BundleError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    choice = ENCODERS[encoder]
    if drop_links is None:
        drop_links = choice.drop_links
    if finetune is None:
        env = os.environ.get(FINETUNE_ENV)
        finetune = env is not None and env != "0"  # frozen unless asked: the quick bundle
    return choice, drop_links, finetune


def _default_layers(choice: EncoderChoice, finetune: bool, heads: HeadsFrom) -> int | None:
    """The layers a build keeps unless told (None: all): the encoder's ``tuned_layers`` when
    it is fine-tuned across events."""
    return choice.tuned_layers if finetune and heads == "corpus" else None


def _work_tokenizer(work_dir: Path, source: Path, drop_links: bool) -> Path:
    """The source model's tokenizer in ``work_dir``, rewritten to drop links if asked."""
    tokenizer = work_dir / TOKENIZER
    if drop_links:
        export.write_tokenizer(tokenizer, source / TOKENIZER)
    else:
        shutil.copyfile(source / TOKENIZER, tokenizer)
    return tokenizer


def _text_section(
    stage: Path,
    data_dir: Path | None,
    progress: Progress,
    tokenizer: Path,
    source: Path,
    tuned: finetune_mod.FinetuneResult | None,
    choice: EncoderChoice,
    activations: export.Activations,
    drop_links: bool,
    skip: FunctionWords | None,
) -> dict[str, Any]:
    """Exports the (fine-tuned) text encoder into ``stage``; its manifest section."""
    section = _encoder_section(
        stage,
        *export.check_texts(data_dir),
        progress,
        tokenizer,
        tuned.model_dir if tuned else source,
        choice.model_id,
        _calibration_texts(data_dir),
        export.candidates_for(activations),
        skip,
    )
    if drop_links:
        section["preprocessing"] = f"links ({LINK_PATTERN}) removed by the tokenizer"
    if tuned is not None:
        section["fine_tuning"] = tuned.manifest
    return section


def _fit_heads(
    data_dir: Path | None,
    heads: HeadsFrom,
    choice: EncoderChoice,
    stage: Path,
    onnx_file: Path,
    progress: Progress,
    tuned: finetune_mod.FinetuneResult | None,
    skip: FunctionWords | None,
) -> tuple[list[train.HeadResult], Lexicon | None, Any]:
    """The heads, the lexicon of hybrid heads, and the manifest's note on the data."""
    if data_dir is not None and heads == "corpus":
        corpus = load_corpus(data_dir.parent, CORPUS_SOURCES)
        data_note = training_summary(corpus)
        head_list, lexicon = corpus_heads(
            corpus, data_dir, onnx_file, stage / FP32, stage / TOKENIZER, progress, skip
        )
        return head_list, lexicon, data_note
    if data_dir is not None:
        baseline_tokenizer = None
        if choice.key != "minilm":
            baseline_tokenizer = export.source_model_dir() / TOKENIZER
        head_list, lexicon = trained_heads(
            data_dir,
            onnx_file,
            stage / FP32,
            stage / TOKENIZER,
            progress,
            tuned.heads if tuned else None,
            baseline_tokenizer,
            skip,
        )
        return head_list, lexicon, DATA_NOTE
    head_list = zero_shot_heads(onnx_file, stage / TOKENIZER, skip)
    progress("no CrisisMMD data: zero-shot heads from label descriptions")
    return head_list, None, None


def _save_heads(stage: Path, head_list: list[train.HeadResult], lexicon: Lexicon | None) -> None:
    for head in head_list:
        train.save_head(stage / f"head_{head.task}.npz", head.weight, head.bias, head.lexical)
    if lexicon is not None and any(h.lexical is not None for h in head_list):
        lexicon.save(stage / LEXICON)


def _add_image_side(
    stage: Path,
    manifest: dict[str, Any],
    bundle: Bundle,
    progress: Progress,
    data_dir: Path | None,
) -> None:
    """Builds the image side into ``stage`` and adds it to the manifest (checked on load)."""
    from stream.build.image_assets import build_image_assets

    result = build_image_assets(
        stage, bundle.encoder, bundle.heads, progress, data_dir, lexicon=bundle.lexicon
    )
    manifest["image_encoder"] = result["image_encoder"]
    _write_manifest(stage, manifest)
    load_bundle(stage)


def build_bundle(
    out_dir: Path,
    data_dir: Path | None,
    progress: Progress,
    *,
    command: str | None = None,
    image: bool = False,
    finetune: bool | None = None,
    drop_links: bool | None = None,
    encoder: str = DEFAULT_ENCODER,
    activations: export.Activations = "per-token",
    heads: HeadsFrom = "corpus",
    pooling: Pooling | None = None,
    layers: int | None = None,
) -> Path:
    """Build a bundle into ``out_dir`` and return it.

    ``data_dir`` is the CrisisMMD directory (None: zero-shot heads); ``command`` is recorded as
    the build command (default: ``crisis-stream models build --out <out_dir>``); ``image`` also
    builds the image side (:func:`stream.build.image_assets.build_image_assets`);
    ``finetune`` fine-tunes the encoder on the data first, across events for ``heads`` corpus
    (default: ``$CRISIS_STREAM_FINETUNE`` is 1, else frozen);
    ``drop_links`` gives the encoder a tokenizer that drops links (:mod:`stream.models.links`):
    ~3x the encoder's speed on tweets, but humanitarian dev macro-F1 fell 0.010, so it is
    opt-in for MiniLM (default: the encoder's own choice); ``encoder``: a key of
    :data:`stream.build.encoders.ENCODERS`;
    ``activations``: which int8 candidates to try (:func:`stream.build.export.candidates_for`);
    ``pooling``: ``mean_content`` leaves function words out of the pool and the lexicon
    (:mod:`stream.models.text`; default unless fine-tuned on CrisisMMD's splits), ``mean``
    pools every token; ``layers``: keep the encoder's first N transformer layers (default: the
    encoder's ``tuned_layers`` when fine-tuned across events, else all).
    """
    choice, drop_links, finetune = _resolve_options(encoder, drop_links, finetune)
    if layers is None:  # a build without data cannot fine-tune: it keeps every layer
        layers = _default_layers(choice, finetune and data_dir is not None, heads)
    choice = choice.first_layers(layers)
    pooling = resolve_pooling(pooling, finetune, heads)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    stage = out_dir.with_name(f".{out_dir.name}.partial")
    _remove(stage)
    stage.mkdir(parents=True)
    work = tempfile.TemporaryDirectory(prefix="crisis-ft-")
    try:
        source = choice.locate()
        tokenizer = _work_tokenizer(Path(work.name), source, drop_links)
        skip = stage_skip(stage, pooling)
        tuned = None
        if data_dir is not None and finetune:
            tuned = _finetune(data_dir, Path(work.name), progress, tokenizer, choice, heads)
        section = _text_section(
            stage,
            data_dir,
            progress,
            tokenizer,
            source,
            tuned,
            choice,
            activations,
            drop_links,
            skip,
        )
        if layers is not None:
            section["layers"] = layers  # what a per-fold fine-tuning must cut its source to
        onnx_file = stage / section["files"][section["precision"]]
        head_list, lexicon, data_note = _fit_heads(
            data_dir, heads, choice, stage, onnx_file, progress, tuned, skip
        )
        _save_heads(stage, head_list, lexicon)
        manifest: dict[str, Any] = {
            "format": 1,
            "name": choice.bundle_name,
            "version": BUNDLE_VERSION,
            "build_command": command
            or _command(
                out_dir,
                choice,
                drop_links,
                image,
                activations,
                heads,
                finetune,
                pooling,
                layers,
                tuned is not None,
            ),
            "built_from": {
                "text": choice.describe(),
                "data": data_note,
                "tools": _tools(),
                "machine": _machine(),
            },
            "text_encoder": section,
            "heads": [h.spec(f"head_{h.task}.npz") for h in head_list],
        }
        if (stage / LEXICON).exists():
            manifest["lexicon"] = LEXICON
        _write_manifest(stage, manifest)
        bundle = load_bundle(stage)  # the runtime's own checks: schema, hashes, shapes
        if image:
            _add_image_side(stage, manifest, bundle, progress, data_dir)
        manifest["build_seconds"] = round(time.perf_counter() - t0, 1)
        (stage / CARD).write_text(render_card(manifest), encoding="utf-8")
        _write_manifest(stage, manifest)
        _replace(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        work.cleanup()
    progress(
        f"bundle {choice.bundle_name} {BUNDLE_VERSION} built in {time.perf_counter() - t0:.0f}s"
    )
    return out_dir
