"""A self-contained HTML explanation of one event: ``crisis-stream explain EVENT.json``.

The event goes through the same :class:`~stream.pipeline.Pipeline` as production, so the page
shows exactly what the worker would publish: per task the label and scores, the text with each
rationale word shaded by its signed effect, the image with a heat map of all 7x7 cells'
shares (boxes in original pixels, drawn in an SVG over the image) and the cross-modal links.
The image is re-encoded from the safely decoded pixels and inlined as a data URI, so the file
opens anywhere without network access and never embeds the raw, untrusted bytes.
"""

from __future__ import annotations

import base64
import html
import io

from stream.images.decode import ImageError, flatten, open_image
from stream.images.source import ImageOptions, load_image_bytes
from stream.pipeline import Pipeline
from stream.schemas import ImageCell, InputEvent, LabeledEvent, Origin, TextSpan

__all__ = ["ALL_CELLS", "explain_event", "render_html"]

DISPLAY_MAX_SIDE = 720
ALL_CELLS = 49

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:24px;color:#1d2329;max-width:1100px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:17px;margin:20px 0 6px}
.meta{color:#5c6770;font-size:13px} .err{color:#a12;font-weight:600}
.task{border:1px solid #d8dde2;border-radius:8px;padding:12px 16px;margin:14px 0}
.text{font-size:17px;background:#fafbfc;padding:10px;border-radius:6px}
.w{border-radius:3px;padding:0 1px} .pos{outline:1px solid #2a8a3e}
.neg{outline:1px solid #c33}
.scores td{padding:1px 10px 1px 0} .bar{display:inline-block;height:9px;background:#4a7fb5}
.img{position:relative;margin-top:8px;max-width:100%;background-image:var(--image);
background-size:100% 100%} .img svg{position:absolute;left:0;top:0}
.legend{font-size:12px;color:#5c6770}
"""


def _text_html(text: str, spans: list[TextSpan]) -> str:
    """``text`` with each rationale word wrapped and shaded by its weight."""
    if not spans:
        return html.escape(text)
    top = max(abs(s.weight) for s in spans) or 1.0
    parts, last = [], 0
    for s in sorted(spans, key=lambda s: s.start):
        if s.start < last:
            continue
        alpha = 0.15 + 0.6 * abs(s.weight) / top
        color = f"rgba(42,160,70,{alpha:.2f})" if s.weight > 0 else f"rgba(220,50,50,{alpha:.2f})"
        cls = "pos" if s.weight > 0 else "neg"
        parts.append(html.escape(text[last : s.start]))
        parts.append(
            f'<span class="w {cls}" style="background:{color}" '
            f'title="{s.weight:+.4f}">{html.escape(text[s.start : s.end])}</span>'
        )
        last = s.end
    parts.append(html.escape(text[last:]))
    return "".join(parts)


def _image_html(width: int, height: int, cells: list[ImageCell]) -> str:
    """The image (a CSS background, inlined once per page) with an SVG heat map whose viewBox
    is the original pixel space, so the cells' boxes are drawn as published. Opacity shows
    each cell's |share| relative to the weakest and strongest cell."""
    mags = [abs(c.weight) for c in cells] or [0.0]
    lo, span = min(mags), (max(mags) - min(mags)) or 1.0
    rects = []
    for c in cells:
        alpha = 0.08 + 0.6 * (abs(c.weight) - lo) / span
        fill = "#ff5a00" if c.weight > 0 else "#1f5fff"
        rects.append(
            f'<rect x="{c.x}" y="{c.y}" width="{c.w}" height="{c.h}" fill="{fill}" '
            f'fill-opacity="{alpha:.3f}"><title>{html.escape(c.concept or "")} '
            f"{c.weight:+.5f}</title></rect>"
        )
    shown = min(width, DISPLAY_MAX_SIDE)
    return (
        f'<div class="img" role="img" aria-label="image heat map" '
        f'style="width:{shown}px;aspect-ratio:{width}/{height}">'
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'width="100%" height="100%">{"".join(rects)}</svg></div>'
    )


def _data_uri(data: bytes, options: ImageOptions) -> tuple[str, int, int]:
    """A JPEG data URI of the safely decoded image, at most ``DISPLAY_MAX_SIDE`` wide."""
    opened = open_image(data, options.max_pixels, options.max_bytes, draft=DISPLAY_MAX_SIDE)
    img = opened.image
    img.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
    img = flatten(img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return uri, opened.width, opened.height


def render_html(event: InputEvent, out: LabeledEvent, image: tuple[str, int, int] | None) -> str:
    """The report page for one labelled event (``image``: data URI and original size)."""
    body = [
        f"<h1>Event {html.escape(out.id)}</h1>",
        f'<div class="meta">model {html.escape(out.model.bundle)} {html.escape(out.model.version)}'
        f" ({html.escape(out.model.quantization)}) · reliance, mean over tasks: text "
        f"{out.modality.get('text', 0):.0%} / image {out.modality.get('image', 0):.0%}</div>",
    ]
    if out.image_error:
        body.append(f'<p class="err">image not used: {html.escape(out.image_error)}</p>')
    for task, lab in out.labels.items():
        spans = [s for s in out.rationale.text if s.task == task]
        cells = [c for c in out.rationale.image if c.task == task]
        scores = "".join(
            f'<tr><td>{html.escape(name)}</td><td>{p:.3f}</td><td><span class="bar" '
            f'style="width:{int(p * 160)}px"></span></td></tr>'
            for name, p in sorted(lab.scores.items(), key=lambda kv: -kv[1])
        )
        review = " · needs review" if lab.needs_review else ""
        share = lab.modality or out.modality
        section = [
            f'<div class="task"><h2>{html.escape(task)}: {html.escape(lab.label)} '
            f"({lab.score:.3f}){review}</h2>"
            f'<div class="meta">this label: text {share.get("text", 0):.0%} / image '
            f"{share.get('image', 0):.0%}</div>"
            f"<table class='scores'>{scores}</table>",
            f'<p class="text">{_text_html(out.text, spans) or "<i>(no text)</i>"}</p>',
        ]
        if image is not None and cells:
            section.append(_image_html(image[1], image[2], cells))
            top = sorted(cells, key=lambda c: -abs(c.weight))[:5]
            section.append(
                '<p class="legend">orange cells push towards the label, blue against; '
                "strongest: "
                + ", ".join(f"{html.escape(c.concept or '?')} {c.weight:+.4f}" for c in top)
                + "</p>"
            )
        body.append("".join(section) + "</div>")
    if out.rationale.links:
        items = "".join(
            f"<li>“{html.escape(out.text[lk.text_span[0] : lk.text_span[1]])}” ↔ cell at "
            f"x={lk.image_cell[0]}, y={lk.image_cell[1]} (cosine {lk.weight:.3f})</li>"
            for lk in out.rationale.links
        )
        body.append(f"<h2>Cross-modal links</h2><ul>{items}</ul>")
    image_css = f':root{{--image:url("{image[0]}")}}' if image is not None else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>crisis-stream explanation {html.escape(out.id)}</title>"
        f"<style>{_CSS}{image_css}</style></head><body>{''.join(body)}</body></html>\n"
    )


def explain_event(
    pipeline: Pipeline, event: InputEvent, options: ImageOptions
) -> tuple[LabeledEvent, str]:
    """Label ``event`` with ``pipeline`` and render its explanation page."""
    out = pipeline.label([event], [Origin(topic="explain", partition=0, offset=0)])[0]
    image = None
    if event.image is not None and out.image_error is None and out.rationale.image:
        try:
            image = _data_uri(load_image_bytes(event.image, options), options)
        except ImageError as exc:  # labelled fine, but cannot be shown (e.g. changed on disk)
            out.image_error = f"display: {exc}"
    return out, render_html(event, out, image)
