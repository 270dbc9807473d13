"""Build time: run :func:`stream.build.crossval.crossval` for a bundle and print its summary.

Loads the corpus (:mod:`stream.data.corpus`), detects each message's language, embeds every
message with the bundle's int8 encoder (and fp32 encoder, to measure what int8 costs), and hands
the rows to the protocol. With ``finetune`` the bundle's encoder is not used: each fold gets the
bundle's source weights fine-tuned across the other folds' events
(:mod:`stream.build.event_finetune`), quantized as a build would, with the bundle's
tokenizer and pooling. Separate from the protocol so that the protocol can be tested on small
synthetic embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.build.corpus_embed import cached_embed
from stream.build.crossval import CrossvalInputs, crossval
from stream.build.encoders import ENCODERS
from stream.build.event_finetune import ACROSS_EVENTS, fold_encoder
from stream.build.event_heads import DEV_EVENTS
from stream.build.export import check_texts, embed
from stream.data.corpus import load_corpus
from stream.data.message import Message
from stream.errors import ConfigError
from stream.lang import detect_language
from stream.models.bundle import pool_skip
from stream.models.function_words import FunctionWords
from stream.models.manifest import Manifest, read_manifest
from stream.tasks import LABELS

__all__ = ["format_report", "run_crossval"]

Progress = Callable[[str], None]


def _fold_embeddings(
    bundle: Path,
    root: Path,
    manifest: Manifest,
    messages: Sequence[Message],
    skip: FunctionWords | None,
    progress: Progress,
) -> tuple[Callable[[Sequence[str]], np.ndarray], str]:
    """Every message's embedding by the encoder fine-tuned without a fold (built once per
    fold, kept in memory for the next task), and what the fold encoders are fine-tuned from.
    A frozen bundle's folds get the layers a fine-tuned build of it would keep."""
    enc = manifest.text_encoder
    tuning = (enc.model_extra or {}).get("fine_tuning")
    if tuning and not str(tuning.get("recipe", "")).startswith(ACROSS_EVENTS):
        raise ConfigError(
            f"{bundle}'s encoder was fine-tuned on CrisisMMD's splits, not across events: "
            "--finetune would measure another recipe than its own"
        )
    choice = next((c for c in ENCODERS.values() if c.bundle_name == manifest.name), None)
    if choice is None:
        raise ConfigError(
            f"{bundle} was not built from a known encoder ({', '.join(ENCODERS)}): nothing to "
            "fine-tune per fold"
        )
    layers = (enc.model_extra or {}).get("layers")
    if layers is None and not tuning:  # a frozen bundle: measure the recipe a build would cut
        layers = choice.tuned_layers
    choice = choice.first_layers(layers)
    tokenizer = bundle / enc.tokenizer
    texts = [m.text for m in messages]
    source = (choice.locate(), choice.describe())
    progress(f"fold encoders fine-tuned from {source[1]}")
    checks = check_texts(root / "crisismmd" if (root / "crisismmd").is_dir() else None)[0]
    memo: dict[tuple[str, ...], np.ndarray] = {}

    def embeddings(fold: Sequence[str]) -> np.ndarray:
        key = tuple(sorted(fold))
        if key not in memo:
            progress(f"encoder fine-tuned without {', '.join(key)}")
            onnx = fold_encoder(messages, key, source, tokenizer, checks, progress, skip)
            memo[key] = cached_embed(onnx, tokenizer, texts, progress, skip)
        return memo[key]

    return embeddings, source[1]


def run_crossval(
    bundle: Path,
    root: Path,
    progress: Callable[[str], None],
    folds: int = 0,
    fp32: bool = True,
    baseline: bool = True,
    limit_per_group: int | None = None,
    tasks: Sequence[str] = tuple(LABELS),
    finetune: bool = False,
    dev_first: bool | None = None,
) -> dict[str, Any]:
    """The cross-event report of ``bundle``'s encoder on the corpus under ``root``.
    ``limit_per_group``: keep the first N messages of each group (a quick, noisier run);
    ``finetune``: each fold's encoder fine-tuned without it; ``dev_first``: the dev events as
    the first fold (default: with ``finetune``)."""
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
    if (enc.model_extra or {}).get("fine_tuning") and not finetune:
        raise ConfigError(
            f"{bundle}'s encoder was fine-tuned on the events: every fold would be scored by an "
            "encoder trained on its labels. Pass --finetune (each fold's encoder fine-tuned "
            "without it), or cross-validate a bundle with a frozen encoder."
        )
    tokenizer = bundle / enc.tokenizer
    skip = pool_skip(bundle, enc)
    texts = [m.text for m in messages]
    f32, per_fold, fold_source = None, None, None
    if finetune:  # every fold brings its own encoder; the shared rows are never read
        int8 = np.zeros((len(texts), enc.dim), np.float32)
        per_fold, fold_source = _fold_embeddings(bundle, root, manifest, messages, skip, progress)
    else:
        int8 = cached_embed(bundle / enc.files["int8"], tokenizer, texts, progress, skip)
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
        per_fold,
    )
    dev_first = finetune if dev_first is None else dev_first
    report = crossval(inputs, progress, folds, tasks, baseline, dev_first=dev_first)
    report["bundle"] = {"name": manifest.name, "version": manifest.version, "path": str(bundle)}
    report["data"] = corpus.sources
    if fold_source is not None:
        report["fold_encoders_from"] = fold_source
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
