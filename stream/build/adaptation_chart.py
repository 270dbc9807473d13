"""The simulation's curves as a hand-written SVG line chart (docs/images/adaptation.svg).

One panel per task (their macro-F1 levels differ too much to share an axis): x = answers,
y = mean macro-F1 over events, one line per answer order with its 95 % interval as a band.
Plain SVG with no scripts or fonts, so it renders in any Markdown viewer and diffs as text.
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["adaptation_svg"]

COLORS = {"queue": "#2b6cb0", "random": "#dd6b20"}
NAMES = {"queue": "review queue (least confident first)", "random": "random messages"}
_FONT = "font-family='system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif'"
_W, _H, _LEFT, _TOP, _GAP = 300, 220, 58, 60, 70


def _range(summary: dict[str, Any]) -> tuple[float, float]:
    values = [v for s in ("queue", "random") for st in summary[s] for v in st["interval"]]
    lo, hi = min(values), max(values)
    pad = max(0.01, (hi - lo) * 0.1)
    return round(lo - pad, 2), round(hi + pad, 2)


def _ticks(lo: float, hi: float) -> list[float]:
    step = next(s for s in (0.01, 0.02, 0.05, 0.1, 0.2) if (hi - lo) / s <= 6)
    first = -(-lo // step) * step
    return [round(first + i * step, 2) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _panel(task: str, summary: dict[str, Any], x0: float) -> list[str]:
    checkpoints = summary["checkpoints"]
    lo, hi = _range(summary)
    xmax = checkpoints[-1] or 1

    def px(n: float, v: float) -> tuple[float, float]:
        return x0 + n / xmax * _W, _TOP + (hi - v) / (hi - lo) * _H

    out = [
        f"<text x='{x0 + _W / 2}' y='{_TOP - 10}' text-anchor='middle' font-weight='600'>"
        f"{escape(task)} ({summary['events']} events)</text>",
        f"<rect x='{x0}' y='{_TOP}' width='{_W}' height='{_H}' fill='none' stroke='#999'/>",
    ]
    for t in _ticks(lo, hi):
        _, y = px(0, t)
        out.append(
            f"<line x1='{x0}' y1='{y:.1f}' x2='{x0 + _W}' y2='{y:.1f}' stroke='#eee'/>"
            f"<text x='{x0 - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#555'>{t:.2f}</text>"
        )
    for n in checkpoints:
        x, _ = px(n, lo)
        out.append(
            f"<text x='{x:.1f}' y='{_TOP + _H + 16}' text-anchor='middle' fill='#555'>{n}</text>"
        )
    for s in ("random", "queue"):
        color, stats = COLORS[s], summary[s]
        upper = [px(n, st["interval"][1]) for n, st in zip(checkpoints, stats, strict=True)]
        lower = [px(n, st["interval"][0]) for n, st in zip(checkpoints, stats, strict=True)]
        band = " ".join(f"{x:.1f},{y:.1f}" for x, y in upper + lower[::-1])
        line = " ".join(
            f"{x:.1f},{y:.1f}"
            for x, y in (px(n, st["mean"]) for n, st in zip(checkpoints, stats, strict=True))
        )
        out.append(f"<polygon points='{band}' fill='{color}' fill-opacity='0.15'/>")
        out.append(f"<polyline points='{line}' fill='none' stroke='{color}' stroke-width='2'/>")
        for n, st in zip(checkpoints, stats, strict=True):
            x, y = px(n, st["mean"])
            lo_i, hi_i = st["interval"]
            out.append(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{color}'><title>{escape(task)}, "
                f"{s}, {n} answers: {st['mean']:.3f} [{lo_i:.3f}, {hi_i:.3f}]</title></circle>"
            )
    out.append(
        f"<text x='{x0 + _W / 2}' y='{_TOP + _H + 36}' text-anchor='middle'>analysts' answers"
        "</text>"
    )
    return out


def adaptation_svg(tasks: dict[str, dict[str, Any]], title: str) -> str:
    """``tasks``: each task's summary (:func:`stream.build.adaptation_sim.summarise`)."""
    width = _LEFT + len(tasks) * (_W + _GAP) + 10
    height = _TOP + _H + 80
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {_FONT} font-size='12' role='img'>",
        f"<title>{escape(title)}</title>",
        f"<rect width='{width}' height='{height}' fill='#fff'/>",
        f"<text x='10' y='20' font-size='14' font-weight='600'>{escape(title)}</text>",
        f"<text transform='translate(16,{_TOP + _H / 2}) rotate(-90)' text-anchor='middle'>"
        "mean macro-F1 on the test half</text>",
    ]
    for k, (task, summary) in enumerate(tasks.items()):
        out += _panel(task, summary, _LEFT + k * (_W + _GAP))
    legend_y = _TOP + _H + 58
    for k, s in enumerate(("queue", "random")):
        x = _LEFT + k * 290
        out.append(
            f"<line x1='{x}' y1='{legend_y - 4}' x2='{x + 22}' y2='{legend_y - 4}' "
            f"stroke='{COLORS[s]}' stroke-width='2'/>"
            f"<text x='{x + 28}' y='{legend_y}'>{escape(NAMES[s])}</text>"
        )
    out.append(
        f"<text x='{_LEFT + 2 * 290 - 40}' y='{legend_y}' fill='#555'>band: 95 % interval "
        "over events</text>"
    )
    out.append("</svg>")
    return "".join(out)
