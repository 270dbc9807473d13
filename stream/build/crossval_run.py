"""Build time: run :func:`stream.build.crossval.crossval` for a bundle and print its summary.

Loads the corpus (:mod:`stream.data.corpus`), detects each message's language, embeds every
message with the bundle's int8 encoder (and fp32 encoder, to measure what int8 costs), and hands
the rows to the protocol. Separate from the protocol so that the protocol can be tested on
small synthetic embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.build.corpus_embed import cached_embed
from stream.build.crossval import CrossvalInputs, crossval
from stream.build.event_heads import DEV_EVENTS
from stream.build.export import embed
from stream.data.corpus import load_corpus
from stream.errors import ConfigError
from stream.lang import detect_language
from stream.models.bundle import pool_skip
from stream.models.manifest import read_manifest
from stream.tasks import LABELS

__all__ = ["format_report", "run_crossval"]


def run_crossval(
    bundle: Path,
    root: Path,
    progress: Callable[[str], None],
    folds: int = 0,
    fp32: bool = True,
    baseline: bool = True,
    limit_per_group: int | None = None,
    tasks: Sequence[str] = tuple(LABELS),
) -> dict[str, Any]:
    """The cross-event report of ``bundle``'s encoder on the corpus under ``root``.
    ``limit_per_group``: keep the first N messages of each group (a quick, noisier run)."""
    corpus = load_corpus(root)
    messages = corpus.messages
    if limit_per_group is not None:
        seen: dict[str, int] = {}
        kept = []
        for m in messages:
            seen[m.event] = seen.get(m.event, 0) + 1
            if seen[m.event] <= limit_per_group:
                kept.append(m)
        messages = kept
    progress(f"corpus: {len(messages)} messages in {len({m.event for m in messages})} groups")
    manifest = read_manifest(bundle)
    enc = manifest.text_encoder
    if (enc.model_extra or {}).get("fine_tuning"):
        raise ConfigError(
            f"{bundle}'s encoder was fine-tuned on CrisisMMD events: every fold holding one of "
            "them out would be scored by an encoder trained on its labels. Cross-validate a "
            "bundle with a frozen encoder (the default)."
        )
    tokenizer = bundle / enc.tokenizer
    skip = pool_skip(bundle, enc)
    texts = [m.text for m in messages]
    int8 = cached_embed(bundle / enc.files["int8"], tokenizer, texts, progress, skip)
    f32 = None
    if fp32:
        f32 = cached_embed(bundle / enc.files["fp32"], tokenizer, texts, progress, skip)

    def describe(labels: list[str]) -> np.ndarray:
        return embed(bundle / enc.files["int8"], tokenizer, labels, skip=skip)

    inputs = CrossvalInputs(
        messages,
        int8,
        describe,
        f32,
        [m.lang or detect_language(m.text) for m in messages],
        skip,
    )
    report = crossval(inputs, progress, folds, tasks, baseline)
    report["bundle"] = {"name": manifest.name, "version": manifest.version, "path": str(bundle)}
    report["data"] = corpus.sources
    if limit_per_group is not None:
        report["limit_per_group"] = limit_per_group
        report["protocol"] += f"; only the first {limit_per_group} messages of each group"
    return report


def _fmt(block: dict[str, Any] | None) -> str:
    if not block:
        return "-"
    lo, hi = block["macro_f1_interval"]
    return f"{block['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}]"


def format_report(report: dict[str, Any]) -> str:
    """A plain-text summary: per group, then the means, baselines and languages."""
    lines = [f"cross-event evaluation: {report['protocol']}"]
    for task, t in report["tasks"].items():
        lines.append(f"\n{task}: macro-F1 / accuracy / ECE per held-out group (TF-IDF baseline)")
        for g, row in sorted(t["groups"].items()):
            base = row.get("baseline", {}).get("macro_f1")
            dev = " (dev event)" if g in DEV_EVENTS else ""
            lines.append(
                f"  {g:34s} n {row['n']:5d}  {row['macro_f1']:.3f} / {row['accuracy']:.3f} / "
                f"{row['ece']:.3f}" + (f"  ({base:.3f})" if base is not None else "") + dev
            )
        for suffix, what in (("", "events"), ("_without_dev_events", "events, dev events out")):
            mean = t[f"mean_over_events{suffix}"]
            lines.append(
                f"  mean over {mean['events']} {what}: macro-F1 {_fmt(mean)}, accuracy "
                f"{mean['accuracy']:.3f}, ECE {mean['ece']:.3f}; worst "
                f"{mean['worst_event']['event']} {mean['worst_event']['macro_f1']:.3f}"
            )
            lines.append(f"    TF-IDF baseline, same folds: {_fmt(t['baseline_tfidf' + suffix])}")
            lines.append(f"    zero-shot prototype heads:   {_fmt(t['zero_shot' + suffix])}")
            lines.append(f"    same heads, fp32 encoder:    {_fmt(t['fp32_encoder' + suffix])}")
        langs = ", ".join(
            f"{k} {v['macro_f1']:.3f} (n {v['n']})" for k, v in t["by_language"].items()
        )
        lines.append(f"  by language (events pooled): {langs}")
    return "\n".join(lines)
