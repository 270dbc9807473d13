"""Labels without retraining: prototype heads from a sentence per label, refined by examples.

A prototype head scores an event by the cosine between its embedding and each label's
prototype, times a fixed scale: ``W = scale * normalise(p_k)``, ``b = 0``. The prototype of a
label is the normalised mean of its description's embedding and the embeddings of any
examples given (the description counts as one example), so a user can add a label with one
sentence and sharpen it with a handful of tweets. It is still a linear head on the mean-pooled
embedding, so its token rationales stay exact.

``add_label`` writes a *new* bundle directory (the old one keeps serving until the worker is
pointed at, or hot-reloads, the new one). A task whose head was trained on labelled data is
not extended: its labels were learnt jointly and a prototype row would not be on the same
scale; add the label to a new (or prototype) task instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.build.train import (
    ZERO_SHOT_REVIEW_THRESHOLD,
    ZERO_SHOT_SCALE,
    Split,
    evaluate,
    save_head,
)
from stream.errors import BundleError
from stream.models.bundle import load_bundle, read_manifest, sha256_file
from stream.models.text import TextEncoder

__all__ = ["add_label", "few_shot_metrics", "prototype_weights"]


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))


def prototype_weights(
    encoder: TextEncoder,
    labels: Sequence[str],
    descriptions: Mapping[str, str],
    examples: Mapping[str, Sequence[str]] | None = None,
    scale: float = ZERO_SHOT_SCALE,
) -> np.ndarray:
    """``W`` [labels, dim] of a prototype head (``b`` is zero)."""
    examples = examples or {}
    rows = []
    for label in labels:
        texts = [descriptions[label], *examples.get(label, ())]
        emb = encoder.encode(texts).embeddings
        rows.append(_unit(emb.mean(axis=0)))
    return (np.stack(rows) * scale).astype(np.float32)


def few_shot_metrics(
    encoder: TextEncoder,
    labels: Sequence[str],
    descriptions: Mapping[str, str],
    train: Mapping[str, Sequence[str]],
    test: Split,
    shots: int = 16,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> dict[str, Any]:
    """Test metrics of prototype heads built from ``shots`` train texts per label (drawn with
    each seed) plus the descriptions; the mean and spread over the draws."""
    runs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        picked = {
            lab: [train[lab][j] for j in rng.choice(len(train[lab]), shots, replace=False)]
            for lab in labels
        }
        w = prototype_weights(encoder, labels, descriptions, picked)
        logits = test.x @ w.T
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        runs.append(evaluate(e / e.sum(axis=1, keepdims=True), test.y, labels, 0.5))
    acc = [r["accuracy"] for r in runs]
    f1 = [r["macro_f1"] for r in runs]
    return {
        "shots_per_label": shots,
        "draws": len(runs),
        "accuracy": round(float(np.mean(acc)), 4),
        "macro_f1": round(float(np.mean(f1)), 4),
        "macro_f1_min": round(float(np.min(f1)), 4),
        "macro_f1_max": round(float(np.max(f1)), 4),
        "n": test.y.shape[0],
    }


def add_label(
    bundle_dir: Path,
    out_dir: Path,
    task: str,
    label: str,
    description: str,
    examples: Sequence[str] = (),
) -> dict[str, Any]:
    """Copy ``bundle_dir`` to ``out_dir`` with ``label`` added to the prototype head of
    ``task`` (created if the bundle has no such task); returns the new head's manifest entry."""
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    if out_dir.exists():
        raise BundleError(f"{out_dir} exists: give a new directory for the new bundle")
    bundle = load_bundle(bundle_dir)  # verifies hashes before anything is copied
    manifest = orjson.loads((bundle_dir / "manifest.json").read_bytes())
    heads: list[dict[str, Any]] = manifest["heads"]
    entry = next((h for h in heads if h["task"] == task), None)
    if entry is not None and entry.get("kind", "trained") == "trained":
        raise BundleError(
            f"task {task!r} has a trained head (labels learnt jointly): add {label!r} to a new "
            "task, e.g. --task custom, or retrain the bundle"
        )
    if entry is None:
        entry = {"task": task, "kind": "prototype", "labels": [], "descriptions": {}}
        entry["review_threshold"] = ZERO_SHOT_REVIEW_THRESHOLD
        heads.append(entry)
    descriptions: dict[str, str] = dict(entry.get("descriptions") or {})
    stored: dict[str, list[str]] = {k: list(v) for k, v in (entry.get("examples") or {}).items()}
    if label not in entry["labels"]:
        entry["labels"] = [*entry["labels"], label]
    descriptions[label] = description
    if examples:
        stored[label] = list(examples)
    missing = [lab for lab in entry["labels"] if lab not in descriptions]
    if missing:
        raise BundleError(f"task {task!r}: labels {missing} have no description to rebuild from")
    weight = prototype_weights(bundle.encoder, entry["labels"], descriptions, stored)
    entry.update(
        kind="prototype",
        file=f"head_{task}.npz",
        temperature=1.0,
        descriptions=descriptions,
        examples=stored,
        metrics={"note": "prototype head: description + examples, not measured"},
    )
    stage = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(bundle_dir, stage)
    try:
        save_head(stage / entry["file"], weight, np.zeros(len(entry["labels"]), np.float32))
        manifest["version"] = f"{manifest['version']}+{task}.{len(entry['labels'])}"
        manifest["files"][entry["file"]] = sha256_file(stage / entry["file"])
        (stage / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        read_manifest(stage)
        load_bundle(stage)
        stage.rename(out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return dict(entry)
