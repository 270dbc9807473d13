"""Build time: the shipped heads, fitted on every labelled crisis message there is.

Training rows: the whole corpus (:mod:`stream.data.corpus`: CrisisMMD, CrisisLexT26, Figure
Eight, de-duplicated) minus every text of a CrisisMMD dev or test split, so the bundle's
CrisisMMD test figures stay comparable with published results. Heads:
:func:`stream.build.event_heads.fit_event_head`, the recipe ``models crossval`` measures on
held-out events. Figures written into the manifest: CrisisMMD agreed dev/test (int8 and fp32
encoder, with intervals), the zero-shot prototype heads and a TF-IDF baseline on the same
splits, and where the training rows came from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream.build import tfidf, train
from stream.build.corpus_embed import cached_embed
from stream.build.event_heads import EventData, fit_event_head
from stream.build.fit_heads import short, zero_shot_heads
from stream.build.hybrid import fit_lexicon
from stream.data.corpus import Corpus
from stream.data.crisismmd import SPLITS, CrisisRow, load_split
from stream.models.function_words import FunctionWords
from stream.models.lexicon import Lexicon

__all__ = ["corpus_heads", "training_summary"]

Progress = Callable[[str], None]


def training_summary(corpus: Corpus) -> dict[str, Any]:
    """Provenance for the manifest and the model card: sets, licences, rows, events."""
    kept = [m for m in corpus.messages if not m.benchmark_held_out]
    return {
        "sources": corpus.sources,
        "duplicates_dropped": corpus.duplicates_dropped,
        "held_out": "every text of a CrisisMMD dev or test split (either task) and its copies",
        "training_messages": len(kept),
        "events": sorted({m.event for m in kept}),
        "rows_by_task": {
            task: dict(sorted(Counter(m.labels[task] for m in kept if task in m.labels).items()))
            for task in train.LABELS
        },
    }


def _split(
    rows: list[CrisisRow], table: np.ndarray, index: dict[str, int], lexicon: Lexicon, task: str
) -> train.Split:
    return train.Split.of(
        table[[index[r.text] for r in rows]],
        [r.label for r in rows],
        train.LABELS[task],
        [lexicon.analyse(r.text) for r in rows],
    )


def corpus_heads(
    corpus: Corpus,
    data_dir: Path,
    encoder: Path,
    fp32_encoder: Path,
    tokenizer: Path,
    progress: Progress,
    skip: FunctionWords | None = None,
) -> tuple[list[train.HeadResult], Lexicon]:
    """One head per task fitted on the corpus (module docstring) and measured on CrisisMMD's
    agreed dev/test splits under ``data_dir``; returns the heads and their words-only lexicon.
    ``skip``: content pooling's function words (n-grams of them only leave the lexicon)."""
    kept = [m for m in corpus.messages if not m.benchmark_held_out]
    texts = sorted({m.text for m in kept})
    table = cached_embed(encoder, tokenizer, texts, progress, skip)
    index = {t: i for i, t in enumerate(texts)}
    lexicon = fit_lexicon(texts, chars=False, skip=skip)
    progress(f"lexicon: {lexicon.size} word features from {len(texts)} training texts")
    analyses = {t: lexicon.analyse(t) for t in texts}
    bench = {(t, s): load_split(data_dir, t, s) for t in train.LABELS for s in SPLITS}
    eval_texts = sorted({r.text for (_, s), rs in bench.items() if s != "train" for r in rs})
    int8_eval = cached_embed(encoder, tokenizer, eval_texts, progress, skip)
    fp32_eval = cached_embed(fp32_encoder, tokenizer, eval_texts, progress, skip)
    eval_index = {t: i for i, t in enumerate(eval_texts)}
    zero_shot = {h.task: h for h in zero_shot_heads(encoder, tokenizer, skip)}
    heads = []
    for task, labels in train.LABELS.items():
        rows = [m for m in kept if task in m.labels]
        data = EventData(
            table[[index[m.text] for m in rows]],
            np.array([labels.index(m.labels[task]) for m in rows]),
            np.array([m.event for m in rows]),
            [analyses[m.text] for m in rows],
        )
        progress(f"head {task}: fitting on {len(rows)} messages of {len(set(data.events))} events")
        head = fit_event_head(task, labels, data, lexicon)
        evals = {
            s: _split(bench[(task, s)], int8_eval, eval_index, lexicon, task)
            for s in ("dev", "test")
        }
        head.metrics.update(head.measure(evals))
        fp32 = head.measure(
            {s: _split(bench[(task, s)], fp32_eval, eval_index, lexicon, task) for s in evals}
        )
        head.metrics["fp32_encoder"] = {s: short(m) for s, m in fp32.items()}
        head.metrics["zero_shot_baseline"] = {
            "encoder": "the bundle's encoder (not fine-tuned)",
            **{s: short(m) for s, m in zero_shot[task].measure(evals).items()},
        }
        head.metrics["rows"] = {"train": len(rows), **{s: len(bench[(task, s)]) for s in evals}}
        head.metrics["tfidf_baseline"] = tfidf.tfidf_baseline(
            labels, bench[(task, "train")], bench[(task, "dev")], {"test": bench[(task, "test")]}
        )
        progress(
            f"head {task}: T={head.temperature:.3f}, review<{head.review_threshold}; CrisisMMD "
            f"test acc {head.metrics['test']['accuracy']}, macro-F1 "
            f"{head.metrics['test']['macro_f1']} (fp32 encoder {fp32['test']['macro_f1']})"
        )
        heads.append(head)
    return heads, lexicon
