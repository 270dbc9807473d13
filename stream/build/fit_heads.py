"""Build time: the heads of a bundle, fitted on its exported encoder.

Trained on the CrisisMMD agreed train splits, tuned on dev, measured on test, with the figures a
reader needs beside them (fp32 encoder, zero-shot and 16-shot prototypes, TF-IDF baseline, the
all-label informative split); or zero-shot prototypes when there is no data. Separate from
:mod:`stream.build.bundle`, which exports, quantizes, assembles and verifies the bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.build import export, fewshot, hybrid, tfidf, train
from stream.data.crisismmd import SPLITS, CrisisRow, load_split, split_path
from stream.models.function_words import FunctionWords
from stream.models.lexicon import Analysis, Lexicon, analyse_all

__all__ = ["held_out", "informative_all", "trained_heads", "zero_shot_heads"]

Progress = Callable[[str], None]


def short(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "ece", "n", "auto_share")}


def zero_shot_heads(
    encoder: Path, tokenizer: Path, skip: FunctionWords | None = None
) -> list[train.HeadResult]:
    """One prototype head per task from the label descriptions, embedded by ``encoder`` with
    the bundle's pooling (``skip``)."""
    heads = []
    for task, labels in train.LABELS.items():
        desc = train.DESCRIPTIONS[task]
        emb = export.embed(encoder, tokenizer, [desc[name] for name in labels], skip=skip)
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


def held_out(
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
    encoder: Path,
    tokenizer: Path,
    labels: list[str],
    lexicon: Lexicon | None,
    skip: FunctionWords | None,
) -> dict[str, Any]:
    """The informative head (trained on the agreed split) on the all-label test split, and a
    TF-IDF baseline trained on the all-label train split (C on its dev split)."""
    test = every["test"]
    x = export.embed(encoder, tokenizer, [r.text for r in test], skip=skip)
    analyses = analyse_all(lexicon, [r.text for r in test])
    measured = head.measure({"test": train.Split.of(x, [r.label for r in test], labels, analyses)})
    return {
        "note": "splits/informative_all: every tweet, not only those whose text and image "
        "labels agree; the head is the bundle's (trained on the agreed train split)",
        "test": short(measured["test"]),
        "tfidf_baseline": tfidf.tfidf_baseline(
            labels, every["train"], every["dev"], {"test": test}
        ),
    }


def trained_heads(
    data_dir: Path,
    encoder: Path,
    fp32_encoder: Path,
    tokenizer: Path,
    progress: Progress,
    ft_heads: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    baseline_tokenizer: Path | None = None,
    skip: FunctionWords | None = None,
) -> tuple[list[train.HeadResult], Lexicon]:
    """Heads trained on train, tuned on dev, measured on test (plus zero-shot and fp32-encoder
    figures for comparison), and the lexicon of the hybrid heads. Each distinct text is
    embedded once. With ``ft_heads`` (the fine-tuning heads) each task keeps whichever of the
    two has the better dev macro-F1 on the int8 embeddings; then :func:`hybrid.hybridize`.
    ``baseline_tokenizer``: the package MiniLM's, when the bundle's encoder is another model
    (the data-free baselines always run on the package MiniLM). ``skip``: content pooling's
    function words (n-grams of them only leave the lexicon)."""
    rows = {
        (task, split): load_split(data_dir, task, split)
        for task in train.LABELS
        for split in SPLITS
    }
    texts = sorted({r.text for split_rows in rows.values() for r in split_rows})
    progress(f"embedding {len(texts)} distinct CrisisMMD texts with the int8 encoder")
    t0 = time.perf_counter()
    table = export.embed(encoder, tokenizer, texts, skip=skip)
    index = {t: i for i, t in enumerate(texts)}
    progress(f"embedded in {time.perf_counter() - t0:.0f}s")
    eval_texts = sorted({r.text for (_, s), rs in rows.items() if s != "train" for r in rs})
    fp32_table = export.embed(fp32_encoder, tokenizer, eval_texts, skip=skip)
    fp32_index = {t: i for i, t in enumerate(eval_texts)}
    progress(f"embedded {len(eval_texts)} dev/test texts with fp32 (int8 vs fp32 comparison)")
    zero_shot = {h.task: h for h in zero_shot_heads(encoder, tokenizer, skip)}
    every = informative_all(data_dir)
    held = {r.text for r in held_out(rows, every)}
    clean = sorted({r.text for (_, s), rs in rows.items() if s == "train" for r in rs} - held)
    lexicon = hybrid.fit_lexicon(clean, skip=skip)
    analyses = {t: lexicon.analyse(t) for t in texts}
    progress(f"lexicon: {lexicon.size} TF-IDF features from {len(clean)} train texts")
    # zero- and 16-shot prototypes on the package encoder: what a user gets with no training
    free = fewshot.data_free_baselines(
        baseline_tokenizer or tokenizer,
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
            selection["head"] = "finetuned" if ft_dev > lr_dev else "logistic_regression"
            if ft_dev > lr_dev:
                ft.metrics["selection"] = {**selection, "C": None}
                head = ft
        evals = {s: splits[s] for s in ("dev", "test")}
        encoder_only = {s: short(m) for s, m in head.measure(evals).items()}
        head = hybrid.hybridize(head, lexicon, splits["train"], splits["dev"])
        head.metrics["hybrid"]["encoder_only"] = encoder_only
        head.metrics.update(head.measure(evals))
        fp32 = head.measure(
            {
                s: _split(rows[(task, s)], fp32_table, fp32_index, labels, analyses)
                for s in ("dev", "test")
            }
        )
        head.metrics["fp32_encoder"] = {s: short(m) for s, m in fp32.items()}
        zs = zero_shot[task]
        head.metrics["zero_shot_baseline"] = {
            "scale": train.ZERO_SHOT_SCALE,
            "encoder": "the bundle's encoder ("
            + ("fine-tuned on the train splits: not data-free)" if ft_heads else "package)"),
            **{s: short(m) for s, m in zs.measure(evals).items()},
        }
        head.metrics["rows"] = {s: len(rows[(task, s)]) for s in SPLITS}
        head.metrics["data_free"] = free[task]
        head.metrics["tfidf_baseline"] = tfidf.tfidf_baseline(
            labels, rows[(task, "train")], rows[(task, "dev")], {"test": rows[(task, "test")]}
        )
        if task == "informative" and every is not None:
            head.metrics["informative_all"] = _informative_all_metrics(
                head, every, encoder, tokenizer, labels, lexicon, skip
            )
        progress(
            f"head {task}: C={head.metrics['selection']['C']}, T={head.temperature:.3f}, "
            f"review<{head.review_threshold}; test acc {head.metrics['test']['accuracy']}, "
            f"macro-F1 {head.metrics['test']['macro_f1']} (fp32 encoder "
            f"{fp32['test']['macro_f1']}, zero-shot {head.metrics['zero_shot_baseline']['test']})"
        )
        heads.append(head)
    return heads, lexicon


def informative_all(data_dir: Path) -> dict[str, list[CrisisRow]] | None:
    """The all-label informative splits (train/dev/test), or None when they are absent."""
    if not all(split_path(data_dir, "informative", s, "informative_all").is_file() for s in SPLITS):
        return None
    return {s: load_split(data_dir, "informative", s, "informative_all") for s in SPLITS}
