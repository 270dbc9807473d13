"""Cross-event evaluation (``crisis-stream models crossval``): how labels hold on a new disaster.

Protocol: every group of the corpus (an event; Figure Eight's genres stand in for events) is
held out in turn; heads are fitted on the other groups with the shipped recipe
(:func:`stream.build.event_heads.fit_event_head`) on the bundle's own int8 embeddings, and
label the held-out group. Each held-out group reports macro-F1, accuracy and ECE; the headline
is the mean over the *crisis events* (CrisisMMD and CrisisLexT26; Figure Eight's SMS and news
genres are reported but not averaged in), with a 95 % bootstrap interval over events. Beside it,
under the same folds: a TF-IDF + logistic-regression baseline (word 1-2 grams, balanced
classes), the bundle's zero-shot prototype heads (no training at all), the same heads on the
fp32 encoder, and pooled figures per language (``lang`` detected by :mod:`stream.lang`) with
bootstrap intervals over messages. ``folds=K`` groups events into K folds instead of leaving one
out (cheaper; the report says which). With ``fold_embeddings`` each fold is embedded by its own
encoder, fine-tuned without the fold's groups (:mod:`stream.build.event_finetune`); the zero-shot
and fp32 comparisons, which assume one encoder for all folds, are then left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.build.event_heads import DEV_EVENTS, EventData, fit_event_head
from stream.build.hybrid import fit_lexicon
from stream.build.train import DESCRIPTIONS, HeadResult, zero_shot_head
from stream.data.message import Message
from stream.errors import MissingExtraError
from stream.evaluation.intervals import RESAMPLES, bootstrap_intervals
from stream.evaluation.metrics import accuracy, expected_calibration_error, macro_f1
from stream.models.function_words import FunctionWords
from stream.models.numeric import softmax
from stream.tasks import LABELS

__all__ = [
    "BASELINE_C",
    "REPORT_LANGUAGES",
    "CrossvalInputs",
    "TaskRows",
    "crossval",
    "dev_fold_first",
    "event_mean",
    "fit_fold",
    "folds_of",
    "summaries",
]

BASELINE_C = {"informative": 2.0, "humanitarian": 8.0}  # the TF-IDF baseline's dev optimum
REPORT_LANGUAGES = ("en", "es", "pt", "fr", "it", "tl")
MIN_LANGUAGE_ROWS = 30

Progress = Callable[[str], None]


@dataclass
class CrossvalInputs:
    """The corpus and what the bundle's encoder made of it (rows aligned with ``messages``).
    ``embed`` turns label descriptions into embeddings (for the zero-shot heads); ``skip``: the
    words the bundle's content pooling skips, whose n-grams its lexicon leaves out."""

    messages: Sequence[Message]
    int8: np.ndarray
    embed: Callable[[list[str]], np.ndarray]
    fp32: np.ndarray | None = None
    languages: list[str | None] = field(default_factory=list)
    skip: FunctionWords | None = None  # content pooling's function words (lexicon too)
    #: every message's int8 embedding by the encoder fine-tuned without a fold's groups
    fold_embeddings: Callable[[Sequence[str]], np.ndarray] | None = None


def is_event(group: str) -> bool:
    """Figure Eight's genres are groups of the folds, not crisis events of the headline mean."""
    return not group.startswith("figure8")


def folds_of(groups: Sequence[str], k: int) -> list[list[str]]:
    """Leave-one-out (``k`` = 0) or ``k`` folds of whole groups (round-robin by size)."""
    names = sorted(set(groups))
    if k <= 0 or k >= len(names):
        return [[g] for g in names]
    sizes = {g: sum(1 for x in groups if x == g) for g in names}
    folds: list[list[str]] = [[] for _ in range(k)]
    for i, g in enumerate(sorted(names, key=lambda g: (-sizes[g], g))):
        folds[i % k].append(g)
    return folds


def dev_fold_first(groups: Sequence[str], k: int) -> list[list[str]]:
    """The dev events (:data:`~stream.build.event_heads.DEV_EVENTS`) as one fold, the other
    groups in ``k - 1`` folds (each alone for ``k`` <= 1): a recipe chosen on the first fold
    is reported on the others."""
    names = sorted(set(groups))
    dev = [g for g in names if g in DEV_EVENTS]
    rest = [g for g in groups if g not in DEV_EVENTS]
    if not rest:
        return [dev]
    return ([dev] if dev else []) + folds_of(rest, k - 1 if k > 1 else 0)


def _scores(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    pred = probs.argmax(axis=1)
    ece, _ = expected_calibration_error(probs.max(axis=1), pred == y)
    return {
        "n": len(y),
        "macro_f1": round(macro_f1(y, pred), 4),
        "accuracy": round(accuracy(y, pred), 4),
        "ece": round(ece, 4),
    }


def _tfidf_probs(task: str, k: int, train: list[str], y: np.ndarray, test: list[str]) -> Any:
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise MissingExtraError("sklearn", "build") from exc
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
    model = LogisticRegression(C=BASELINE_C[task], class_weight="balanced", max_iter=3000)
    model.fit(vec.fit_transform(train), y)
    probs = np.zeros((len(test), k))
    probs[:, model.classes_] = model.predict_proba(vec.transform(test))
    return probs


def event_mean(
    rows: dict[str, dict[str, Any]], key: str | None = None, exclude: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Mean over the crisis events (minus ``exclude``) of macro-F1 (interval: bootstrap over
    events), accuracy and ECE; ``key`` reads a nested comparison (``baseline``, ``zero_shot``,
    ``fp32``)."""
    events = [
        g for g in rows if is_event(g) and g not in exclude and (key is None or key in rows[g])
    ]
    if not events:
        return {}
    vals = {
        m: np.array([(rows[g][key] if key else rows[g])[m] for g in events])
        for m in ("macro_f1", "accuracy", "ece")
    }
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(events), size=(RESAMPLES, len(events)))
    means = vals["macro_f1"][idx].mean(axis=1)
    worst = int(np.argmin(vals["macro_f1"]))
    return {
        "events": len(events),
        "macro_f1": round(float(vals["macro_f1"].mean()), 4),
        "macro_f1_interval": [round(float(q), 4) for q in np.quantile(means, [0.025, 0.975])],
        "accuracy": round(float(vals["accuracy"].mean()), 4),
        "ece": round(float(vals["ece"].mean()), 4),
        "worst_event": {"event": events[worst], "macro_f1": float(vals["macro_f1"][worst])},
    }


def summaries(per: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The means of a task's per-group rows: over all crisis events, and over the events the
    recipe was *not* chosen on (:data:`~stream.build.event_heads.DEV_EVENTS` left out: the
    unbiased headline), for the recipe and each comparison under the same folds."""
    out: dict[str, Any] = {}
    for name, exclude in (("", frozenset()), ("_without_dev_events", DEV_EVENTS)):
        out[f"mean_over_events{name}"] = event_mean(per, None, exclude)
        for part, key in (
            ("baseline_tfidf", "baseline"),
            ("zero_shot", "zero_shot"),
            ("fp32_encoder", "fp32"),
        ):
            mean = event_mean(per, key, exclude)
            out[f"{part}{name}"] = mean or None
    return out


def _by_language(
    labels: list[str], y: np.ndarray, pred: np.ndarray, langs: list[str | None]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    codes = np.array([x or "unknown" for x in langs])
    groups = {c: codes == c for c in REPORT_LANGUAGES}
    groups["non_english"] = (codes != "en") & (codes != "unknown")
    for name, mask in groups.items():
        if mask.sum() < MIN_LANGUAGE_ROWS:
            continue
        t, p = [labels[i] for i in y[mask]], [labels[i] for i in pred[mask]]
        iv = bootstrap_intervals(t, p, labels)["macro_f1"]
        out[name] = {
            "n": int(mask.sum()),
            "macro_f1": round(macro_f1(y[mask], pred[mask]), 4),
            "macro_f1_interval": [round(iv.low, 4), round(iv.high, 4)],
        }
    return out


def _zero_shot(task: str, inputs: CrossvalInputs) -> tuple[np.ndarray, np.ndarray]:
    """The zero-shot head's weights: what a user with no labels at all gets."""
    labels = LABELS[task]
    desc = DESCRIPTIONS[task]
    head = zero_shot_head(task, labels, desc, inputs.embed([desc[n] for n in labels]))
    return head.weight, head.bias


@dataclass(frozen=True)
class TaskRows:
    """A task's labelled rows of the corpus: each row's index into the messages, label index,
    group (event) and text, and the embeddings of those rows."""

    labels: list[str]
    rows: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    texts: list[str]
    x: np.ndarray

    @classmethod
    def of(cls, task: str, messages: Sequence[Message], x: np.ndarray) -> TaskRows:
        labels = LABELS[task]
        rows = np.array([i for i, m in enumerate(messages) if task in m.labels], np.int64)
        index = {name: i for i, name in enumerate(labels)}
        y = np.array([index[messages[i].labels[task]] for i in rows], np.int64)
        groups = np.array([messages[i].event for i in rows])
        return cls(labels, rows, y, groups, [messages[i].text for i in rows], x[rows])


def fit_fold(
    task: str, data: TaskRows, test: np.ndarray, skip: FunctionWords | None = None
) -> tuple[HeadResult, EventData]:
    """The shipped head fitted on the rows outside the boolean mask ``test`` (its own words-only
    lexicon from their texts, without the n-grams of ``skip``'s function words when the bundle
    pools content words), and the ``test`` rows as the head scores them."""
    tr, te = np.flatnonzero(~test), np.flatnonzero(test)
    lexicon = fit_lexicon([data.texts[i] for i in tr], chars=False, skip=skip)
    analyses = [lexicon.analyse(t) for t in data.texts]
    rows = EventData(data.x, data.y, data.groups, analyses)
    return fit_event_head(task, data.labels, rows.take(tr), lexicon), rows.take(te)


def _fold_rows(task: str, inputs: CrossvalInputs, fold: Sequence[str], base: TaskRows) -> TaskRows:
    """The task's rows as this fold's encoder embeds them (``base`` when one encoder serves all)."""
    if inputs.fold_embeddings is None:
        return base
    return TaskRows.of(task, inputs.messages, inputs.fold_embeddings(fold))


def _task(
    task: str,
    inputs: CrossvalInputs,
    folds: list[list[str]],
    baseline: bool,
    progress: Progress,
) -> dict[str, Any]:
    base_rows = TaskRows.of(task, inputs.messages, inputs.int8)
    labels, rows, y, groups, texts = (
        base_rows.labels,
        base_rows.rows,
        base_rows.y,
        base_rows.groups,
        base_rows.texts,
    )
    msgs = [inputs.messages[i] for i in rows]
    one_encoder = inputs.fold_embeddings is None
    zs_w, zs_b = _zero_shot(task, inputs) if one_encoder else (None, None)
    per: dict[str, dict[str, Any]] = {}
    pred_all = np.zeros(len(rows), np.int64)
    x32_rows = inputs.fp32[rows] if inputs.fp32 is not None and one_encoder else None
    t0 = time.perf_counter()
    present = set(groups.tolist())
    for f, whole in enumerate(folds, 1):
        fold = [g for g in whole if g in present]  # a task lacks some groups' labels
        if not fold:
            continue
        test = np.isin(groups, fold)
        tr, te = np.flatnonzero(~test), np.flatnonzero(test)
        head, held = fit_fold(task, _fold_rows(task, inputs, whole, base_rows), test, inputs.skip)
        probs = softmax(head.logits(held.split()) / head.temperature)
        pred_all[te] = probs.argmax(axis=1)
        fp32 = None
        if x32_rows is not None:
            x32 = EventData(x32_rows[te], held.y, held.events, held.analyses)
            fp32 = softmax(head.logits(x32.split()) / head.temperature)
        zs = None if zs_w is None else softmax(held.x @ zs_w.T + zs_b)
        base = None
        if baseline:
            base = _tfidf_probs(
                task, len(labels), [texts[i] for i in tr], y[tr], [texts[i] for i in te]
            )
        for g in fold:
            m = groups[te] == g
            row = _scores(probs[m], held.y[m])
            row["source"] = msgs[te[np.flatnonzero(m)[0]]].source
            for key, other in (("zero_shot", zs), ("fp32", fp32), ("baseline", base)):
                if other is not None:
                    row[key] = _scores(other[m], held.y[m])
            per[str(g)] = row
        eta = (time.perf_counter() - t0) / f * (len(folds) - f)
        progress(
            f"{task}: fold {f}/{len(folds)} ({', '.join(fold)}): macro-F1 "
            + ", ".join(f"{per[g]['macro_f1']:.3f}" for g in fold)
            + f"; ETA {eta / 60:.1f} min"
        )
    langs = [inputs.languages[i] for i in rows] if inputs.languages else [None] * len(rows)
    events_only = np.array([is_event(g) for g in groups])
    return {
        "labels": labels,
        "groups": per,
        **summaries(per),
        "by_language": _by_language(
            labels,
            y[events_only],
            pred_all[events_only],
            [lang for lang, e in zip(langs, events_only, strict=True) if e],
        ),
    }


def crossval(
    inputs: CrossvalInputs,
    progress: Progress,
    folds: int = 0,
    tasks: Sequence[str] = tuple(LABELS),
    baseline: bool = True,
    dev_first: bool = False,
) -> dict[str, Any]:
    """The cross-event report of ``inputs`` (module docstring) as a JSON-able dict.
    ``dev_first``: the dev events form the first of the ``folds`` (:func:`dev_fold_first`)."""
    t0 = time.perf_counter()
    all_groups = [m.event for m in inputs.messages]
    groups = sorted(set(all_groups))
    fold_list = dev_fold_first(all_groups, folds) if dev_first else folds_of(all_groups, folds)
    leave_one_out = len(fold_list) == len(groups)
    report: dict[str, Any] = {
        "protocol": ("leave-one-event-out" if leave_one_out else f"{len(fold_list)} folds")
        + (" (the dev events together in the first)" if dev_first and not leave_one_out else "")
        + (", each fold's encoder fine-tuned without it" if inputs.fold_embeddings else "")
        + f" over {len(groups)} groups; headline = mean over the crisis events (Figure Eight "
        "genres held out as groups but not averaged in); interval = 95 % bootstrap over events",
        "messages": len(inputs.messages),
        "tasks": {},
    }
    for task in tasks:
        report["tasks"][task] = _task(task, inputs, fold_list, baseline, progress)
    report["folds"] = fold_list
    report["fold_encoders"] = inputs.fold_embeddings is not None
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
