"""Turn the windowed tables' raw items into the JSON the web views serve.

faust stores a windowed table as ``((key, (start, end)), value)`` items (the window end is
``start + size - 0.1``; after a changelog recovery the pair may come back as lists). These
functions group those items by window start and shape them for analysts; they never touch
faust, so they are tested directly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from stream.aggregate.records import decode_key

__all__ = ["by_window", "counts_payload", "iso", "top_words", "words_payload"]

#: One raw item of a windowed table: ((key, (window_start, window_end)), value).
TableItem = tuple[Any, Any]


def iso(ts: float) -> str:
    """ISO 8601 UTC; a time outside what ``datetime`` can hold (year 10000) as epoch seconds."""
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return f"@{ts:.0f}"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def by_window(items: Iterable[TableItem]) -> dict[float, Counter[str]]:
    """Window start -> Counter of table key; zero and negative values are dropped."""
    out: dict[float, Counter[str]] = defaultdict(Counter)
    for (key, window_range), value in items:
        if int(value) > 0:
            out[float(window_range[0])][str(key)] += int(value)
    return dict(out)


def counts_payload(
    items: Iterable[TableItem], window_s: float, expires_s: float, now: float, limit: int
) -> dict[str, Any]:
    """Per window (newest first, at most ``limit``): event -> task -> label -> count.

    ``totals`` is the number of events per task in the window (each event has one label per
    task); ``current`` marks the window that contains ``now``.
    """
    windows = by_window(items)
    out: list[dict[str, Any]] = []
    for start in sorted(windows, reverse=True)[: max(limit, 0)]:
        events: dict[str, dict[str, dict[str, int]]] = {}
        totals: Counter[str] = Counter()
        for key, n in sorted(windows[start].items()):
            event, task, label = decode_key(key)
            events.setdefault(event, {}).setdefault(task, {})[label] = n
            totals[task] += n
        out.append(
            {
                "start": iso(start),
                "end": iso(start + window_s),
                "start_ts": start,
                "current": start <= now < start + window_s,
                "events": events,
                "totals": dict(sorted(totals.items())),
            }
        )
    return {"window_s": window_s, "expires_s": expires_s, "now": iso(now), "windows": out}


def top_words(counter: Counter[str], top: int) -> list[dict[str, Any]]:
    """The ``top`` most frequent words, ties broken alphabetically (stable across calls)."""
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[: max(top, 0)]
    return [{"word": w, "count": n} for w, n in ranked]


def words_payload(
    items: Iterable[TableItem], windows: int | None, top: int, event: str | None = None
) -> dict[str, Any]:
    """Top rationale words per task and label, summed over the newest ``windows`` windows
    (all retained windows when ``None``) and over all events (or only ``event``)."""
    grouped = by_window(items)
    starts = sorted(grouped, reverse=True)
    if windows is not None:
        starts = starts[: max(windows, 0)]
    per_label: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for start in starts:
        for key, n in grouped[start].items():
            name, task, label, word = decode_key(key)
            if event is None or name == event:
                per_label[(task, label)][word] += n
    labels: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (task, label), counter in sorted(per_label.items()):
        labels.setdefault(task, {})[label] = top_words(counter, top)
    return {
        "event": event,
        "windows": len(starts),
        "from": iso(min(starts)) if starts else None,
        "top": top,
        "labels": labels,
    }
