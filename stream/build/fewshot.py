"""Build time: what a user gets without training data, measured on the CrisisMMD test splits.

Two figures per task, both on the *package* all-MiniLM-L6-v2 encoder (int8, as the runtime
would serve it), never on a fine-tuned one, which has seen the train labels:

- zero-shot: prototype heads from the label descriptions alone (no labelled example);
- few-shot: prototypes from the description plus 16 train tweets per label, the mean over five
  seeded draws (what ``crisis-stream models add-label --examples`` gives a user).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stream.build import export, train
from stream.build.labels import few_shot_metrics
from stream.data.crisismmd import CrisisRow
from stream.models.text import TextEncoder

__all__ = ["SHOTS", "data_free_baselines"]

SHOTS = 16


def data_free_baselines(
    tokenizer: Path,
    rows: Mapping[tuple[str, str], Sequence[CrisisRow]],
    progress: Callable[[str], None],
    encoder: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """``{task: {"zero_shot": test metrics, "few_shot_16": test metrics}}``. ``encoder``: an
    int8 export of the package weights if one exists already; else one is made here."""
    with tempfile.TemporaryDirectory(prefix="crisis-fewshot-") as tmp:
        if encoder is None:
            fp32, encoder = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            export.export_fp32(fp32)
            export.quantize_int8(fp32, encoder, export.CANDIDATES[0])
        text = TextEncoder(encoder, tokenizer, 128)
        out: dict[str, dict[str, Any]] = {}
        for task, labels in train.LABELS.items():
            desc = train.DESCRIPTIONS[task]
            test_rows = rows[(task, "test")]
            x = export.embed(encoder, tokenizer, [r.text for r in test_rows])
            test = train.Split.of(x, [r.label for r in test_rows], labels)
            by_label: dict[str, list[str]] = {lab: [] for lab in labels}
            for r in sorted(rows[(task, "train")], key=lambda r: r.text):
                by_label[r.label].append(r.text)
            zero = few_shot_metrics(text, labels, desc, by_label, test, shots=0, seeds=(0,))
            few = few_shot_metrics(text, labels, desc, by_label, test, shots=SHOTS)
            zero.pop("draws", None)
            out[task] = {
                "encoder": "package all-MiniLM-L6-v2, int8 (no fine-tuning)",
                "zero_shot": zero,
                f"few_shot_{SHOTS}": few,
            }
            progress(
                f"data-free {task}: zero-shot macro-F1 {zero['macro_f1']}, "
                f"{SHOTS}-shot prototypes {few['macro_f1']} "
                f"({few['macro_f1_min']}-{few['macro_f1_max']} over {few['draws']} draws)"
            )
    return out
