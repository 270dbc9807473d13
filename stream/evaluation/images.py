"""How well do images help? Text-only, image-only and fused labels on the CrisisMMD rows whose
image is available locally, all through the production :class:`~stream.pipeline.Pipeline`.

Each row is labelled three times: text without the image, the image with empty text, and both
(what production does). Rows are per image, as in the dataset (a tweet with two images counts
twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.data.image_rows import ImageRow
from stream.pipeline import Pipeline
from stream.schemas import ImageRef, InputEvent, LabeledEvent, Origin

__all__ = ["evaluate_image_rows"]


def _scores(gold: list[str], pred: list[str]) -> dict[str, float]:
    y, p = np.array(gold), np.array(pred)
    f1s = []
    for k in np.union1d(y, p):
        tp = float(np.sum((p == k) & (y == k)))
        denom = float(np.sum(p == k) + np.sum(y == k))
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": round(float(np.mean(y == p)), 4), "macro_f1": round(float(np.mean(f1s)), 4)}


def _label(pipeline: Pipeline, events: list[InputEvent], batch: int = 32) -> list[LabeledEvent]:
    out: list[LabeledEvent] = []
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        origins = [Origin(topic="eval", partition=0, offset=start + i) for i in range(len(chunk))]
        out += pipeline.label(chunk, origins)
    return out


def _event(row: ImageRow, i: int, text: bool, image: bool) -> InputEvent:
    ref = ImageRef(path=str(row.image)) if image else None
    return InputEvent(id=f"{row.task}-{i}", text=row.text if text else "", image=ref)


def evaluate_image_rows(pipeline: Pipeline, rows: Sequence[ImageRow]) -> dict[str, Any]:
    """Metrics per task of the rows' task, for text-only, image-only and fused labels."""
    report: dict[str, Any] = {}
    for task in sorted({r.task for r in rows}):
        sel = [r for r in rows if r.task == task]
        labels = next((h.labels for h in pipeline.bundle.heads if h.task == task), None)
        if labels is None:
            continue
        sel = [r for r in sel if r.label in labels]
        gold = [r.label for r in sel]
        runs = {
            "text_only": [_event(r, i, True, False) for i, r in enumerate(sel)],
            "image_only": [_event(r, i, False, True) for i, r in enumerate(sel)],
            "fused": [_event(r, i, True, True) for i, r in enumerate(sel)],
        }
        task_report: dict[str, Any] = {"rows": len(sel)}
        outs = {name: _label(pipeline, events) for name, events in runs.items()}
        for name, labelled in outs.items():
            task_report[name] = _scores(gold, [o.labels[task].label for o in labelled])
            if name != "text_only":
                task_report[name]["image_errors"] = sum(bool(o.image_error) for o in labelled)
        share = np.array([o.labels[task].modality["image"] for o in outs["fused"]])
        changed = [
            f.labels[task].label != t.labels[task].label
            for f, t in zip(outs["fused"], outs["text_only"], strict=True)
        ]
        task_report["reliance"] = {
            "image_mean": round(float(share.mean()), 4),
            "image_median": round(float(np.median(share)), 4),
            "image_over_half": round(float(np.mean(share > 0.5)), 4),
            "fused_label_differs_from_text": round(float(np.mean(changed)), 4),
        }
        report[task] = task_report
    return report
