"""Backtest report: ``summary.json`` for CI and a self-contained ``report.html`` for people.

The HTML embeds its plots as inline SVG drawn here (confusion heat maps, per-class F1 bars,
reliability diagrams), with no scripts, fonts or CDNs, so it opens anywhere — an air-gapped
analyst's laptop, a CI artefact viewer — and can be archived as one file.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "bars_svg",
    "heatmap_svg",
    "reliability_svg",
    "render_html",
    "task_figures",
    "write_report",
]

SIDE_COLORS = {"a": "#2b6cb0", "b": "#dd6b20"}
_TOP_FLIPS = 8  # flip pairs listed in the table; the matrix shows them all
_FONT = "font-family='system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif'"


def _short(label: str, n: int = 22) -> str:
    text = label.replace("_", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def _blue(t: float) -> str:
    """White-to-navy scale for ``t`` in [0, 1]."""
    t = min(max(t, 0.0), 1.0)
    lo, hi = (247, 251, 255), (8, 48, 107)
    r, g, b = (round(lo[i] + (hi[i] - lo[i]) * t) for i in range(3))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap_svg(
    counts: list[list[int]],
    rows: list[str],
    cols: list[str],
    title: str,
    row_title: str = "gold",
    col_title: str = "predicted",
) -> str:
    """A count matrix as a heat map; colour = share of the row (recall for a confusion
    matrix), text = count."""
    cell = 58 if max(len(rows), len(cols)) <= 5 else 44
    left, top = 205, 56
    # room on the right for the title and the rotated column labels
    width = max(left + cell * len(cols) + 110, left + 290, 10 + round(8 * len(title)))
    height = top + cell * len(rows) + 110
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {_FONT} font-size='12' role='img'>",
        f"<title>{escape(title)}</title>",
        f"<text x='10' y='20' font-size='14' font-weight='600'>{escape(title)}</text>",
        f"<text x='10' y='40' fill='#555'>rows: {escape(row_title)} · "
        f"columns: {escape(col_title)}<title>shade = share of the row</title></text>",
    ]
    for i, (row_label, row) in enumerate(zip(rows, counts, strict=True)):
        total = sum(row) or 1
        y = top + i * cell
        out.append(
            f"<text x='{left - 8}' y='{y + cell / 2 + 4}' text-anchor='end'>"
            f"<title>{escape(row_label)}</title>{escape(_short(row_label, 30))}</text>"
        )
        for j, v in enumerate(row):
            share = v / total
            x = left + j * cell
            ink = "#fff" if share > 0.55 else "#111"
            out.append(
                f"<rect x='{x}' y='{y}' width='{cell}' height='{cell}' fill='{_blue(share)}' "
                f"stroke='#fff'><title>{escape(row_label)} → {escape(cols[j])}: {v} "
                f"({share:.1%} of row)</title></rect>"
                f"<text x='{x + cell / 2}' y='{y + cell / 2 + 4}' text-anchor='middle' "
                f"fill='{ink}'>{v}</text>"
            )
    base = top + cell * len(rows) + 8
    for j, col_label in enumerate(cols):
        cx = left + j * cell + cell / 2
        out.append(
            f"<text transform='translate({cx},{base}) rotate(40)' text-anchor='start'>"
            f"<title>{escape(col_label)}</title>{escape(_short(col_label, 16))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def bars_svg(labels: list[str], series: dict[str, list[float]], title: str) -> str:
    """Grouped horizontal bars in [0, 1], one group per label, one bar per series."""
    bar, gap, left, plot_w = 14, 10, 170, 300
    group = bar * len(series) + gap
    top = 46
    width, height = left + plot_w + 70, top + group * len(labels) + 30
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {_FONT} font-size='12' role='img'>",
        f"<title>{escape(title)}</title>",
        f"<text x='{left}' y='20' font-size='14' font-weight='600'>{escape(title)}</text>",
    ]
    for k, name in enumerate(series):
        color = SIDE_COLORS.get(name.lower(), "#718096")
        x = left + k * 70
        out.append(
            f"<rect x='{x}' y='28' width='10' height='10' fill='{color}'/>"
            f"<text x='{x + 14}' y='37'>{escape(name)}</text>"
        )
    for t in (0.0, 0.5, 1.0):
        tx = left + t * plot_w
        out.append(
            f"<line x1='{tx}' y1='{top - 4}' x2='{tx}' y2='{height - 24}' stroke='#ddd'/>"
            f"<text x='{tx}' y='{height - 10}' text-anchor='middle' fill='#555'>{t:.1f}</text>"
        )
    for i, lab in enumerate(labels):
        y0 = top + i * group
        out.append(
            f"<text x='{left - 8}' y='{y0 + bar * len(series) / 2 + 4}' text-anchor='end'>"
            f"<title>{escape(lab)}</title>{escape(_short(lab))}</text>"
        )
        for k, (name, values) in enumerate(series.items()):
            v = min(max(values[i], 0.0), 1.0)
            color = SIDE_COLORS.get(name.lower(), "#718096")
            y = y0 + k * bar
            out.append(
                f"<rect x='{left}' y='{y}' width='{v * plot_w:.1f}' height='{bar - 2}' "
                f"fill='{color}'><title>{escape(name)} {escape(lab)}: {v:.3f}</title></rect>"
                f"<text x='{left + v * plot_w + 4:.1f}' y='{y + bar - 4}' font-size='11'>"
                f"{v:.3f}</text>"
            )
    out.append("</svg>")
    return "".join(out)


def reliability_svg(series: dict[str, list[dict[str, Any]]], title: str) -> str:
    """Accuracy against mean confidence per confidence bin; marker area ~ events in the bin.
    A calibrated model follows the diagonal."""
    size, left, top = 300, 52, 46
    width, height = left + size + 30, top + size + 50
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {_FONT} font-size='12' role='img'>",
        f"<title>{escape(title)}</title>",
        f"<text x='{left}' y='20' font-size='14' font-weight='600'>{escape(title)}</text>",
    ]

    def px(x: float, y: float) -> tuple[float, float]:
        return left + x * size, top + (1 - y) * size

    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        x0, _ = px(t, 0)
        _, y1 = px(0, t)
        out.append(
            f"<line x1='{x0}' y1='{top}' x2='{x0}' y2='{top + size}' stroke='#eee'/>"
            f"<line x1='{left}' y1='{y1}' x2='{left + size}' y2='{y1}' stroke='#eee'/>"
            f"<text x='{x0}' y='{top + size + 16}' text-anchor='middle' fill='#555'>{t:.1f}</text>"
            f"<text x='{left - 6}' y='{y1 + 4}' text-anchor='end' fill='#555'>{t:.1f}</text>"
        )
    (ax, ay), (bx, by) = px(0, 0), px(1, 1)
    out.append(
        f"<line x1='{ax}' y1='{ay}' x2='{bx}' y2='{by}' stroke='#999' stroke-dasharray='4 4'/>"
        f"<rect x='{left}' y='{top}' width='{size}' height='{size}' fill='none' stroke='#999'/>"
        f"<text x='{left + size / 2}' y='{top + size + 34}' text-anchor='middle'>"
        "mean confidence of the predicted label</text>"
        f"<text transform='translate(14,{top + size / 2}) rotate(-90)' text-anchor='middle'>"
        "accuracy</text>"
    )
    total = max((sum(b["count"] for b in bins) for bins in series.values()), default=1) or 1
    for k, (name, bins) in enumerate(series.items()):
        color = SIDE_COLORS.get(name.lower(), "#718096")
        pts = [px(b["confidence"], b["accuracy"]) for b in bins if b["count"]]
        if pts:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='2'/>")
        for b in bins:
            if not b["count"]:
                continue
            x, y = px(b["confidence"], b["accuracy"])
            r = 2.5 + 9 * math.sqrt(b["count"] / total)
            out.append(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r:.1f}' fill='{color}' "
                f"fill-opacity='0.55' stroke='{color}'><title>{escape(name)} "
                f"[{b['lo']:.1f}, {b['hi']:.1f}): {b['count']} events, confidence "
                f"{b['confidence']:.3f}, accuracy {b['accuracy']:.3f}</title></circle>"
            )
        out.append(
            f"<rect x='{left + 10}' y='{top + 10 + k * 18}' width='10' height='10' "
            f"fill='{color}'/><text x='{left + 24}' y='{top + 19 + k * 18}'>"
            f"{escape(name)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1a202c;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #e2e8f0}
table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #e2e8f0;padding:.3rem .6rem;
text-align:left}th{background:#f7fafc}td.n{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:flex;flex-wrap:wrap;gap:1.2rem;align-items:flex-start}.muted{color:#718096}
.big{font-size:1.3rem;font-weight:600}
"""


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _side_name(key: str, side: dict[str, Any]) -> str:
    if "topic" in side and "bundle" not in side:
        return f"{key.upper()}: topic {side['topic']}"
    models = ", ".join(side.get("models", {})) or side.get("bundle", "?")
    return f"{key.upper()}: {models}"


def _sides_table(summary: dict[str, Any]) -> str:
    rows = [
        "<table><tr><th>side</th><th>labelled by</th><th>events</th><th>dead letters</th>"
        "<th>replay time</th></tr>"
    ]
    for key, side in summary["sides"].items():
        src = escape(side.get("bundle") or f"topic {side.get('topic', '?')}")
        if side.get("precision"):
            src += f" ({escape(side['precision'])})"
        models = "<br>".join(f"{escape(m)}: {c}" for m, c in side.get("models", {}).items())
        secs = f"{side['seconds']:.1f} s" if "seconds" in side else "–"
        rows.append(
            f"<tr><td><b>{key.upper()}</b></td><td>{src}<br><span class='muted'>{models}"
            f"</span></td><td class='n'>{side['n']}</td>"
            f"<td class='n'>{side.get('dead_letters', '–')}</td><td class='n'>{secs}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def task_figures(task: str, entry: dict[str, Any]) -> dict[str, str]:
    """The plots of one task as SVG documents, keyed ``<task>-<plot>``."""
    figs: dict[str, str] = {}
    if "matrix" in entry:
        m = entry["matrix"]
        figs[f"{task}-a-vs-b"] = heatmap_svg(
            m["counts"], m["labels_a"], m["labels_b"], f"{task}: A label vs B label", "A", "B"
        )
    gold = {k: v for k, v in entry.get("gold", {}).items() if v}
    if not gold:
        return figs
    for key, g in gold.items():
        figs[f"{task}-confusion-{key}"] = heatmap_svg(
            g["confusion"], g["labels"], g["labels"], f"{task}: {key.upper()} confusion"
        )
    labels: list[str] = []
    for g in gold.values():
        labels += [lab for lab in g["labels"] if lab not in labels]
    f1 = {
        key.upper(): [g["per_class"].get(lab, {}).get("f1", 0.0) for lab in labels]
        for key, g in gold.items()
    }
    figs[f"{task}-f1"] = bars_svg(labels, f1, f"{task}: per-class F1")
    figs[f"{task}-reliability"] = reliability_svg(
        {k.upper(): g["reliability"] for k, g in gold.items()}, f"{task}: reliability"
    )
    return figs


def _interval(g: dict[str, Any], metric: str) -> str:
    iv = g.get("intervals", {}).get(metric)
    return f" <span class='muted'>[{iv['low']:.4f}, {iv['high']:.4f}]</span>" if iv else ""


def _difference_html(diff: dict[str, Any]) -> str:
    """B − A with its paired interval, and whether that interval excludes zero."""
    rows = []
    for metric, name in (("macro_f1", "macro-F1"), ("accuracy", "accuracy")):
        d = diff[metric]
        clear = d["low"] > 0 or d["high"] < 0
        verdict = "beyond the noise of these events" if clear else "within the noise (0 inside)"
        rows.append(
            f"{name} {d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], B higher in "
            f"{d['b_better']:.0%} of resamples: {verdict}"
        )
    level = diff["macro_f1"]["level"]
    return (
        f"<p>B − A on the {diff['n']} events both labelled ({level:.0%} paired bootstrap "
        "interval):</p><ul>" + "".join(f"<li>{escape(r)}</li>" for r in rows) + "</ul>"
    )


def _task_section(task: str, entry: dict[str, Any], sides: dict[str, Any]) -> str:
    figs = task_figures(task, entry)
    parts = [f"<h2>Task: {escape(task)}</h2>"]
    if "agreement" in entry:
        parts.append(
            f"<p><span class='big'>{_pct(entry['agreement'])}</span> agreement between A and B "
            f"on {entry['n']} events; {entry['flips_total']} label flips.</p>"
        )
        flips = sorted(
            ((c, la, lb) for la, tos in entry["flips"].items() for lb, c in tos.items()),
            key=lambda f: (-f[0], f[1], f[2]),
        )
        if flips:
            parts.append("<table><tr><th>A label</th><th>B label</th><th>events</th></tr>")
            for c, la, lb in flips[:_TOP_FLIPS]:
                parts.append(
                    f"<tr><td>{escape(la)}</td><td>{escape(lb)}</td><td class='n'>{c}</td></tr>"
                )
            parts.append("</table>")
            if len(flips) > _TOP_FLIPS:
                parts.append(
                    f"<p class='muted'>{len(flips) - _TOP_FLIPS} smaller flips: see the matrix "
                    "below and <code>summary.json</code>.</p>"
                )
        parts.append(f"<div class='figs'>{figs.pop(f'{task}-a-vs-b')}</div>")
    gold = {k: v for k, v in entry.get("gold", {}).items() if v}
    if not gold:
        parts.append(
            "<p class='muted'>No gold labels for this task: accuracy and F1 need "
            "events with <code>gold</code>.</p>"
        )
        return "".join(parts)
    parts.append(
        "<p class='muted'>Brackets: 95 % bootstrap interval over the events.</p>"
        "<table><tr><th>side</th><th>events with gold</th><th>accuracy</th><th>macro-F1</th>"
        "<th>ECE (10 bins)</th></tr>"
    )
    for key, g in gold.items():
        parts.append(
            f"<tr><td>{escape(_side_name(key, sides[key]))}</td><td class='n'>{g['n']}</td>"
            f"<td class='n'>{g['accuracy']:.4f}{_interval(g, 'accuracy')}</td>"
            f"<td class='n'>{g['macro_f1']:.4f}{_interval(g, 'macro_f1')}</td>"
            f"<td class='n'>{g['ece']:.4f}</td></tr>"
        )
    parts.append("</table>")
    diff = entry.get("gold_difference")
    if diff:
        parts.append(_difference_html(diff))
    parts.append("<div class='figs'>" + "".join(figs.values()) + "</div>")
    return "".join(parts)


def render_html(summary: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    title = f"Backtest of {summary.get('topic', '?')}"
    rng = summary.get("range", {})
    head = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='muted'>range {escape(str(rng.get('from', '?')))} → "
        f"{escape(str(rng.get('to', '?')))} (end exclusive) · created "
        f"{escape(summary.get('created', ''))}</p>",
        _sides_table(summary),
    ]
    if "join" in summary:
        j = summary["join"]
        head.append(
            f"<p>Joined {j['joined']} events ({j['by_origin']} by origin topic/partition/offset, "
            f"{j['by_id']} by id); {j['only_a']} only in A, {j['only_b']} only in B.</p>"
        )
    # tasks with gold labels first: they carry the accuracy and calibration plots
    tasks = sorted(
        summary["tasks"].items(), key=lambda te: (not any(te[1].get("gold", {}).values()), te[0])
    )
    body = [_task_section(t, e, summary["sides"]) for t, e in tasks]
    return "".join(head + body) + "</body></html>\n"


def write_report(summary: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.html``, ``summary.json`` and each plot as ``plots/<task>-<plot>.svg``
    (for embedding in docs) into ``out_dir``."""
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    for task, entry in summary["tasks"].items():
        for name, svg in task_figures(task, entry).items():
            (out_dir / "plots" / f"{name}.svg").write_text(svg + "\n", encoding="utf-8")
    html_path, json_path = out_dir / "report.html", out_dir / "summary.json"
    html_path.write_text(render_html(summary), encoding="utf-8")
    json_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return html_path, json_path
