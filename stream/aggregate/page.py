"""The analysts' page: recent windows as tables with inline bars, and the top rationale words.

Rendered on the server from the same payloads as the JSON views, with no JavaScript and no
external assets, so it works offline, in locked-down browsers and in a headless screenshot.
Every string from the stream is HTML-escaped (event names and words are user content).
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["render_page"]

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#fff}
h1{font-size:1.3rem;margin:0 0 .3rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
p.meta{color:#57606a;margin:0 0 1rem}
table{border-collapse:collapse;margin:.3rem 0 1rem;min-width:36rem}
th,td{text-align:left;padding:.2rem .6rem;border-bottom:1px solid #d0d7de;vertical-align:middle}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{height:.8rem;background:#0969da;border-radius:2px;min-width:2px}
.bar.w{background:#1a7f37}td.b{width:16rem}
.cur{color:#cf222e;font-weight:600}
.words{display:flex;flex-wrap:wrap;gap:1rem}.words table{min-width:16rem}
"""


def _bar(n: int, top: int, css: str = "bar") -> str:
    pct = 100.0 * n / top if top else 0.0
    return f'<div class="{css}" style="width:{pct:.1f}%"></div>'


def _window_table(window: dict[str, Any]) -> str:
    rows = [
        (event, task, label, n)
        for event, tasks in window["events"].items()
        for task, labels in tasks.items()
        for label, n in labels.items()
    ]
    top = max((r[3] for r in rows), default=0)
    body = "".join(
        f"<tr><td>{escape(e)}</td><td>{escape(t)}</td><td>{escape(lbl)}</td>"
        f'<td class="n">{n}</td><td class="b">{_bar(n, top)}</td></tr>'
        for e, t, lbl, n in rows
    )
    totals = ", ".join(f"{escape(t)}: {n}" for t, n in window["totals"].items())
    flag = ' <span class="cur">(current)</span>' if window["current"] else ""
    return (
        f"<h2>{escape(window['start'])} → {escape(window['end'])}{flag}</h2>"
        f'<p class="meta">events per task — {totals}</p>'
        "<table><thead><tr><th>event</th><th>task</th><th>label</th><th>count</th><th></th>"
        f"</tr></thead><tbody>{body}</tbody></table>"
    )


def _words_tables(words: dict[str, Any]) -> str:
    blocks = []
    for task, labels in words["labels"].items():
        for label, ranked in labels.items():
            top = max((w["count"] for w in ranked), default=0)
            rows = "".join(
                f'<tr><td>{escape(w["word"])}</td><td class="n">{w["count"]}</td>'
                f'<td class="b">{_bar(w["count"], top, "bar w")}</td></tr>'
                for w in ranked
            )
            blocks.append(
                f"<table><thead><tr><th colspan=3>{escape(task)} = {escape(label)}</th></tr>"
                f"</thead><tbody>{rows}</tbody></table>"
            )
    return f'<div class="words">{"".join(blocks)}</div>' if blocks else "<p>no rationales yet</p>"


def render_page(
    counts: dict[str, Any], words: dict[str, Any], title: str, refresh_s: int = 30
) -> str:
    """A complete HTML document for the given ``/counts/`` and ``/words/`` payloads."""
    windows = counts["windows"]
    sections = "".join(_window_table(w) for w in windows) or "<p>no labelled events yet</p>"
    minutes = counts["window_s"] / 60
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh_s)}">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="meta">labelled events per {minutes:g}-minute window (event time), newest '
        f"first; {len(windows)} window(s) shown; updated {escape(counts['now'])}. JSON: "
        '<a href="counts/">counts</a>, <a href="words/">words</a>.</p>'
        f"{sections}"
        f"<h2>Top rationale words per label (last {words['windows']} window(s))</h2>"
        f"{_words_tables(words)}</body></html>"
    )
