"""Build time: the text encoder fine-tuned on the labelled messages of many events.

Why: the frozen multilingual encoder is what limits labels on a disaster nobody labelled;
fine-tuning it on other events' labels moves messages of a *new* event too. To measure that
honestly each fold of the cross-event protocol needs its own encoder, fine-tuned without the
fold's events, so the recipe is kept cheap enough for two cores: one epoch on at most
:data:`PER_GROUP` messages of each event (both tasks, seeded sample), with the embeddings and the
bottom half of the layers frozen (no backward pass through them). Every CrisisMMD dev or test
text stays out, as in every other training step. The bundle's heads are fitted afterwards on
the int8 export's embeddings (:mod:`stream.build.corpus_heads`), exactly as for the frozen
encoder.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict
from pathlib import Path

import orjson

from stream.build import export
from stream.build.finetune import FinetuneConfig, FinetuneResult, finetune
from stream.build.weights_dir import cache_root, write_once
from stream.data.crisismmd import CrisisRow
from stream.data.message import Message
from stream.models.manifest import sha256_file
from stream.tasks import LABELS

__all__ = [
    "EVENT_FINETUNE",
    "PER_GROUP",
    "event_rows",
    "finetune_across_events",
    "fold_encoder",
    "int8_encoder",
]

PER_GROUP = 700  # messages per event (group) fine-tuned on
EVENT_FINETUNE = FinetuneConfig(epochs=1)

Progress = Callable[[str], None]


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
        f"across events: at most {per_group} labelled messages of each group, seeded; no "
        "CrisisMMD dev or test text; one epoch, the last kept"
    )
    result.manifest["groups"] = sorted({r.event for rows_ in rows.values() for r in rows_})
    result.heads = {}  # steering heads only: the bundle's heads are fitted on the export
    return result


def int8_encoder(model_dir: Path, out: Path, quantization: export.Quantization) -> Path:
    """Export ``model_dir`` to ONNX fp32 beside ``out`` and quantize it into ``out``."""
    fp32 = out.with_name(out.stem + ".fp32.onnx")
    export.export_fp32(fp32, model_dir)
    export.quantize_int8(fp32, out, quantization)
    return out


def fold_encoder(
    messages: Sequence[Message],
    exclude: Collection[str],
    source_dir: Path,
    tokenizer: Path,
    quantization: export.Quantization,
    progress: Progress,
) -> Path:
    """The int8 encoder fine-tuned without ``exclude``'s groups, built once and kept in the user
    cache under a key of everything it depends on (re-running a cross-validation reuses it)."""
    key = hashlib.sha256(
        orjson.dumps(
            {
                "recipe": asdict(EVENT_FINETUNE),
                "per_group": PER_GROUP,
                "exclude": sorted(exclude),
                "source": str(source_dir),
                "tokenizer": sha256_file(tokenizer),
                "quantization": asdict(quantization),
                "messages": hashlib.sha256(
                    "\x00".join(f"{m.uid}\x01{m.text}" for m in messages).encode()
                ).hexdigest(),
            },
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()[:24]

    def build(tmp: Path) -> None:
        tuned = finetune_across_events(
            messages, source_dir, tokenizer, tmp / "work", progress, exclude
        )
        int8_encoder(tuned.model_dir, tmp / "int8.onnx", quantization)
        shutil.rmtree(tmp / "work")
        (tmp / "int8.fp32.onnx").unlink()

    folder = write_once(cache_root() / "event-encoders" / key, build)
    return folder / "int8.onnx"
