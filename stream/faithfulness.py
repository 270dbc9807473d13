"""Faithfulness of the text rationales, measured with ERASER (DeYoung et al., ACL 2020).

For each text the head's predicted label ``c`` and its calibrated probability ``p(c | x)``:

- comprehensiveness = ``p(c | x) - p(c | x without the rationale words)``: high when the words
  the rationale names really carried the decision;
- sufficiency = ``p(c | x) - p(c | only the rationale words)``: low when they suffice.

Both are compared with removing / keeping the same number of *random* words of the same text:
a faithful rationale must do much better than chance. The rationale is the ``k`` words with
the largest exact share in favour of ``c`` (what the output's rationale shows first); the
variant ranked by absolute share (as published, words against included) is reported too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from stream.models.bundle import Bundle
from stream.models.heads import LinearHead
from stream.rationale import word_shares

__all__ = ["faithfulness", "faithfulness_report", "keep_words", "remove_words"]

_SPACES = re.compile(r"\s+")


def remove_words(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with the character spans cut out and whitespace collapsed."""
    parts, last = [], 0
    for s, e in sorted(spans):
        parts.append(text[last:s])
        last = max(last, e)
    parts.append(text[last:])
    return _SPACES.sub(" ", " ".join(parts)).strip()


def keep_words(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """Only the spans of ``text``, in text order, separated by single spaces."""
    return " ".join(text[s:e] for s, e in sorted(spans))


def _score(bundle: Bundle, head: LinearHead, texts: list[str], labels: np.ndarray) -> np.ndarray:
    """Calibrated probability of ``labels[i]`` for each text."""
    probs = head.predict(bundle.encoder.encode(texts).embeddings).probs
    return np.asarray(probs[np.arange(len(texts)), labels], dtype=np.float64)


def faithfulness_report(
    bundle: Bundle,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    k: int = 5,
    seed: int = 0,
    task: str = "informative",
    repeats: int = 3,
) -> dict[str, Any]:
    """ERASER comprehensiveness and sufficiency of the top-``k`` rationale words of ``task``,
    against ``repeats`` draws of ``k`` random words per text (``labels``: gold, for accuracy)."""
    head = next((h for h in bundle.heads if h.task == task), None)
    if head is None:
        raise click.BadParameter(f"bundle has no head for task {task!r}")
    texts = list(texts)
    enc = bundle.encoder.encode(texts)
    out = head.predict(enc.embeddings)
    pred = out.pred
    base = out.probs[np.arange(len(texts)), pred].astype(np.float64)
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[list[tuple[int, int]]]] = {"support": [], "abs": []}
    random_sets: list[list[list[tuple[int, int]]]] = [[] for _ in range(repeats)]
    n_words = []
    for i in range(len(texts)):
        shares = head.token_shares(enc.tokens[i], float(enc.scale[i]), int(pred[i]))
        words = word_shares(enc.offsets[i], enc.word_ids[i], shares)
        n = len(words)
        n_words.append(n)
        kk = min(k, n)
        by_support = sorted(range(n), key=lambda j: -words[j][2])[:kk]
        by_abs = sorted(range(n), key=lambda j: -abs(words[j][2]))[:kk]
        chosen["support"].append([words[j][:2] for j in by_support])
        chosen["abs"].append([words[j][:2] for j in by_abs])
        for r in range(repeats):
            pick = rng.choice(n, kk, replace=False).tolist() if kk else []
            random_sets[r].append([words[j][:2] for j in pick])

    def measure(sets: list[list[tuple[int, int]]]) -> tuple[float, float]:
        pairs = list(zip(texts, sets, strict=True))
        removed = _score(bundle, head, [remove_words(t, s) for t, s in pairs], pred)
        kept = _score(bundle, head, [keep_words(t, s) for t, s in pairs], pred)
        return float(np.mean(base - removed)), float(np.mean(base - kept))

    comp, suff = measure(chosen["support"])
    comp_abs, suff_abs = measure(chosen["abs"])
    rand = [measure(s) for s in random_sets]
    comp_rand = float(np.mean([r[0] for r in rand]))
    suff_rand = float(np.mean([r[1] for r in rand]))
    report: dict[str, Any] = {
        "task": task,
        "texts": len(texts),
        "k": k,
        "seed": seed,
        "random_repeats": repeats,
        "mean_words": round(float(np.mean(n_words)), 2) if n_words else 0.0,
        "comprehensiveness": round(comp, 4),
        "sufficiency": round(suff, 4),
        "comprehensiveness_random": round(comp_rand, 4),
        "sufficiency_random": round(suff_rand, 4),
        "comprehensiveness_ratio": round(comp / comp_rand, 2) if comp_rand > 0 else None,
        "published_ranking": {
            "comprehensiveness": round(comp_abs, 4),
            "sufficiency": round(suff_abs, 4),
        },
    }
    if labels is not None:
        gold = np.array([head.labels.index(lab) if lab in head.labels else -1 for lab in labels])
        report["accuracy"] = round(float(np.mean(gold == pred)), 4)
    return report


@click.command("faithfulness")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), default=None)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="CrisisMMD directory (default: ../shared/datasets/crisismmd)",
)
@click.option("--task", default="informative", show_default=True)
@click.option(
    "--split",
    type=click.Choice(["test", "dev"]),
    default="test",
    show_default=True,
    help="dev for choosing settings, test for the figure",
)
@click.option("--k", default=5, show_default=True, help="rationale words removed / kept")
@click.option("--seed", default=0, show_default=True)
@click.option("--repeats", default=3, show_default=True, help="random-word draws per text")
@click.option("--limit", type=int, default=None, help="only the first N test texts")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write JSON here")
def faithfulness(
    bundle_dir: Path | None,
    data: Path | None,
    task: str,
    split: str,
    k: int,
    seed: int,
    repeats: int,
    limit: int | None,
    out: Path | None,
) -> None:
    """ERASER comprehensiveness / sufficiency of text rationales on an agreed split."""
    import orjson

    from stream.data.crisismmd import find_dataset, load_split
    from stream.models.bundle import load_bundle
    from stream.settings import Settings

    data = data or find_dataset()
    if data is None:
        raise click.UsageError("CrisisMMD not found: pass --data")
    bundle = load_bundle(bundle_dir or Settings().bundle)
    rows = load_split(data, task, split)
    if limit:
        rows = rows[:limit]
    report = faithfulness_report(
        bundle, [r.text for r in rows], [r.label for r in rows], k, seed, task, repeats
    )
    report["split"] = split
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    if out:
        out.write_text(text + "\n")
    click.echo(text)
