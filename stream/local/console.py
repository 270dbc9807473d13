"""Human-readable rendering of labelled events for the terminal (demo, `tail`)."""

from __future__ import annotations

import click

from stream.schemas import LabeledEvent

__all__ = ["highlight", "render_event"]


def highlight(text: str, spans: list[tuple[int, int, float]]) -> str:
    """Text with rationale words coloured: green pushes toward the label, red against."""
    out, pos = [], 0
    for start, end, weight in sorted(spans):
        if start < pos:
            continue
        out.append(text[pos:start])
        colour = "green" if weight > 0 else "red"
        out.append(click.style(text[start:end], fg=colour, bold=True))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def render_event(ev: LabeledEvent, task: str = "informative") -> str:
    lines = []
    label_bits = []
    for name, tl in ev.labels.items():
        flag = click.style(" REVIEW", fg="yellow") if tl.needs_review else ""
        label_bits.append(f"{name}={click.style(tl.label, bold=True)} ({tl.score:.2f}){flag}")
    o = ev.origin
    lines.append(f"[{o.topic}/{o.partition}@{o.offset}] {ev.id}  " + "  ".join(label_bits))
    spans = [(s.start, s.end, s.weight) for s in ev.rationale.text if s.task == task]
    lines.append("   " + highlight(ev.text, spans))
    words = ", ".join(f"{s.token!r} {s.weight:+.2f}" for s in ev.rationale.text if s.task == task)
    lines.append(f"   why ({task}): {words}")
    if ev.image_error:
        lines.append(click.style(f"   image not used: {ev.image_error}", fg="yellow"))
    elif ev.rationale.image:
        share = ev.labels[task].modality or ev.modality
        reliance = ", ".join(f"{m} {w:.2f}" for m, w in share.items())
        cells = ", ".join(
            f"[{c.x},{c.y} {c.w}x{c.h}] {c.concept or '?'} {c.weight:+.2f}"
            for c in ev.rationale.image
            if c.task == task
        )
        lines.append(f"   image ({task}; reliance {reliance}): {cells}")
        links = ", ".join(
            f"{ev.text[lk.text_span[0] : lk.text_span[1]]!r}~{lk.image_cell} {lk.weight:.2f}"
            for lk in ev.rationale.links
        )
        if links:
            lines.append(f"   links: {links}")
    return "\n".join(lines)
