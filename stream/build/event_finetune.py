"""Build time: the text encoder fine-tuned on the labelled messages of many events.

Why: the frozen multilingual encoder is what limits labels on a disaster nobody labelled;
fine-tuning it on other events' labels moves messages of a *new* event too. To measure that
honestly each fold of the cross-event protocol needs its own encoder, fine-tuned without the
fold's events, so the recipe is kept cheap enough for two cores (about 10 minutes a fold, 6
of them fine-tuning e5's 8 layers): one epoch on at most :data:`PER_GROUP` messages of each
event (both tasks, seeded sample), word embeddings frozen. Every CrisisMMD dev or test text
stays out, as in every other training step.
The steering heads of the fine-tuning pool every token; the bundle's heads are fitted afterwards
on the int8 export's embeddings with the bundle's own pooling (:mod:`stream.build.corpus_heads`),
exactly as for the frozen encoder, and ``models crossval --finetune`` measures that combination.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import orjson

from stream.build import export
from stream.build.finetune import FinetuneConfig, FinetuneResult, finetune
from stream.build.weights_dir import cache_root, write_once
from stream.data.crisismmd import CrisisRow
from stream.data.message import Message
from stream.models.function_words import FunctionWords
from stream.models.manifest import sha256_file
from stream.tasks import LABELS

__all__ = [
    "ACROSS_EVENTS",
    "EVENT_FINETUNE",
    "PER_GROUP",
    "event_rows",
    "export_like_a_build",
    "finetune_across_events",
    "fold_encoder",
]

PER_GROUP = 700  # messages per event (group) fine-tuned on
ACROSS_EVENTS = "across events"  # how a manifest's fine_tuning.recipe names this recipe
EVENT_FINETUNE = FinetuneConfig(epochs=1)

Progress = Callable[[str], None]
ENCODER = "encoder.onnx"  # a fold's encoder in its cache folder
_TOOLS = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")


def event_rows(
    messages: Sequence[Message],
    exclude: Collection[str] = (),
    per_group: int = PER_GROUP,
    seed: int = 0,
) -> dict[str, list[CrisisRow]]:
    """Per task, the rows to fine-tune on: a seeded sample of at most ``per_group`` labelled
    messages of each group outside ``exclude``, never a CrisisMMD dev or test text."""
    by_group: dict[str, list[Message]] = {}
    for m in messages:
        if m.event not in exclude and m.labels and not m.benchmark_held_out:
            by_group.setdefault(m.event, []).append(m)
    rng = random.Random(seed)
    out: dict[str, list[CrisisRow]] = {task: [] for task in LABELS}
    for group in sorted(by_group):
        pool = sorted(by_group[group], key=lambda m: m.uid)
        for m in rng.sample(pool, min(per_group, len(pool))):
            for task, label in m.labels.items():
                if task in out:
                    out[task].append(CrisisRow(m.uid, m.event, m.text, label, None))
    return out


def finetune_across_events(
    messages: Sequence[Message],
    source_dir: Path,
    tokenizer: Path,
    work: Path,
    progress: Progress,
    exclude: Collection[str] = (),
    config: FinetuneConfig = EVENT_FINETUNE,
    per_group: int = PER_GROUP,
) -> FinetuneResult:
    """Fine-tune ``source_dir``'s encoder on the groups outside ``exclude`` and write it under
    ``work`` (a ``from_pretrained`` directory with ``tokenizer``), with the manifest's record."""
    rows = event_rows(messages, exclude, per_group)
    result = finetune(
        rows,
        {task: [] for task in LABELS},
        [],
        LABELS,
        source_dir,
        work / "encoder",
        progress,
        config,
        tokenizer=tokenizer,
    )
    result.manifest["recipe"] = (
        f"{ACROSS_EVENTS}: at most {per_group} labelled messages of each group, seeded; no "
        f"CrisisMMD dev or test text; {config.epochs} epoch(s), the last kept"
    )
    result.manifest["groups"] = sorted({r.event for rows_ in rows.values() for r in rows_})
    result.heads = {}  # steering heads only: the bundle's heads are fitted on the export
    return result


def export_like_a_build(
    model_dir: Path,
    out: Path,
    check_texts: Sequence[str],
    calibration: Sequence[str],
    skip: FunctionWords | None = None,
) -> Path:
    """Export ``model_dir`` to ONNX fp32 beside ``out`` and quantize it into ``out`` the way a
    build does (:func:`stream.build.export.first_passing`: the fine-tuned weights may need
    another candidate than the package's); the fp32 export when no candidate passes."""
    fp32 = out.with_name(out.stem + ".fp32.onnx")
    export.export_fp32(fp32, model_dir)
    tried, _, _ = export.first_passing(
        fp32, out, model_dir / "tokenizer.json", check_texts, calibration, skip=skip
    )
    if tried[-1]["cosine_vs_fp32"]["min"] < export.COSINE_BAR:
        fp32.replace(out)
    else:
        fp32.unlink()
    return out


def _fold_key(
    rows: dict[str, list[CrisisRow]],
    source: str,
    tokenizer: Path,
    check_texts: Sequence[str],
    skip: FunctionWords | None,
) -> str:
    """Everything a fold's encoder depends on: the rows it learns from (text, event, label),
    the labels, the recipe, the source weights, the tokenizer, how it is quantized and checked,
    and the tools."""
    h = hashlib.sha256()
    for task in sorted(rows):
        for r in rows[task]:
            h.update(f"{task}\x00{r.event}\x00{r.label}\x00{r.text}\x01".encode())
    return hashlib.sha256(
        orjson.dumps(
            {
                "rows": h.hexdigest(),
                "labels": LABELS,
                "recipe": asdict(EVENT_FINETUNE),
                "source": source,
                "tokenizer": sha256_file(tokenizer),
                "quantization": [asdict(q) for q in export.CANDIDATES],
                "bar": export.COSINE_BAR,
                "check": hashlib.sha256("\x00".join(check_texts).encode()).hexdigest(),
                "skip": sorted(skip.words) if skip is not None else None,
                "tools": {n: metadata.version(n) for n in _TOOLS},
            },
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()[:24]


def fold_encoder(
    messages: Sequence[Message],
    exclude: Collection[str],
    source: tuple[Path, str],
    tokenizer: Path,
    check_texts: Sequence[str],
    progress: Progress,
    skip: FunctionWords | None = None,
) -> Path:
    """The encoder fine-tuned without ``exclude``'s groups (``source``: the weights' directory
    and description), quantized as a build would (checked on ``check_texts``, pooled with
    ``skip``), built once and kept in the user cache under a key of everything it depends on
    (re-running a cross-validation reuses it)."""
    rows = event_rows(messages, exclude)
    key = _fold_key(rows, source[1], tokenizer, check_texts, skip)
    calibration = sorted({r.text for r in rows["informative"]})
    calibration = random.Random(0).sample(calibration, min(256, len(calibration)))

    def build(tmp: Path) -> None:
        tuned = finetune_across_events(
            messages, source[0], tokenizer, tmp / "work", progress, exclude
        )
        export_like_a_build(tuned.model_dir, tmp / ENCODER, check_texts, calibration, skip)
        shutil.rmtree(tmp / "work")

    folder = write_once(cache_root() / "event-encoders" / key, build)
    return folder / ENCODER
