"""The labelling pipeline shared by the live worker and replay: events in, labelled out.

One code path for both, so a backtest measures exactly what production would publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stream.errors import BundleError
from stream.fusion import fuse
from stream.images.branch import ImageBranch
from stream.images.source import ImageOptions
from stream.lang import detect_language
from stream.models.bundle import Bundle
from stream.rationale import top_words
from stream.schemas import (
    ImageCell,
    InputEvent,
    LabeledEvent,
    ModelInfo,
    Origin,
    Rationale,
    TaskLabel,
    TextSpan,
)

__all__ = ["CANARY_TEXTS", "BatchResult", "BatchTimings", "Pipeline"]

#: texts a bundle must label before it serves, and again when labelling fails, to tell a
#: broken model (a fault of the system: hold the events) from a broken event (a dead letter)
CANARY_TEXTS = (
    "Bridge collapsed after the earthquake, families trapped, please send rescue teams",
    "Se necesitan voluntarios y agua potable en el refugio de la escuela",
    "lol this new movie is so good",
)


@dataclass(frozen=True)
class BatchTimings:
    """Seconds one batch spent: in the text encoder, in the image side (None when no event of
    the batch had an image) and in all of :meth:`Pipeline.label_batch`."""

    encode_text: float
    encode_image: float | None
    total: float


@dataclass(frozen=True)
class BatchResult:
    events: list[LabeledEvent]
    timings: BatchTimings


class Pipeline:
    """Encode a micro-batch once, apply every task head, attach exact rationales.

    Events with an image also go through the bundle's image side (if any): per task, the
    calibrated text and image logits are fused (:mod:`stream.fusion`) and the rationale gains
    image cells and cross-modal links; an image that cannot be used sets ``image_error`` and
    the event is labelled from its text.
    """

    def __init__(
        self,
        bundle: Bundle,
        top_k: int = 5,
        review_threshold: float | None = None,
        images: ImageOptions | None = None,
    ):
        self.bundle = bundle
        self.top_k = top_k
        self.review_threshold = review_threshold
        self.model_info = ModelInfo(**bundle.info)
        self.images = ImageBranch(bundle.image, images, bundle.encoder)
        cells_k = images.cells_top_k if images is not None else None
        self.cells_top_k = top_k if cells_k is None else cells_k

    def canary(self) -> None:
        """Label :data:`CANARY_TEXTS`: raises what labelling raises, or :class:`BundleError`
        when a score is not a probability (a head that does not fit its encoder may still
        run and yield NaN)."""
        events = [InputEvent(id=f"canary-{i}", text=t) for i, t in enumerate(CANARY_TEXTS)]
        origins = [Origin(topic="canary", partition=0, offset=i) for i in range(len(events))]
        for out in self.label(events, origins):
            for task, tl in out.labels.items():
                scores = np.array(list(tl.scores.values()), dtype=np.float64)
                if not (np.isfinite(scores).all() and abs(scores.sum() - 1.0) < 1e-3):
                    raise BundleError(f"{task} scores of a built-in text are not a distribution")

    def label(
        self,
        events: Sequence[InputEvent],
        origins: Sequence[Origin],
        received: Sequence[float] | None = None,
    ) -> list[LabeledEvent]:
        """The labelled events, in input order."""
        return self.label_batch(events, origins, received).events

    def label_batch(
        self,
        events: Sequence[InputEvent],
        origins: Sequence[Origin],
        received: Sequence[float] | None = None,
        progress: Callable[[], None] | None = None,
    ) -> BatchResult:
        """The labelled events and where the batch's time went (for the worker's metrics).

        ``progress`` is called now and then during long image work (URL fetches), so the
        caller's liveness signal stays fresh while one batch takes seconds.
        """
        if not events:
            return BatchResult([], BatchTimings(0.0, None, 0.0))
        t0 = time.perf_counter()
        texts = [e.text for e in events]
        enc = self.bundle.encoder.encode(texts)
        analyses = self.bundle.analyse(texts)
        t_enc = time.perf_counter()
        results = [(head, head.predict(enc.embeddings, analyses)) for head in self.bundle.heads]
        has_images = any(ev.image is not None for ev in events)
        views = self.images.run(events, progress) if has_images else [None] * len(events)
        t_img = time.perf_counter()
        out: list[LabeledEvent] = []
        for i, ev in enumerate(events):
            labels: dict[str, TaskLabel] = {}
            spans: list[TextSpan] = []
            cells: list[ImageCell] = []
            reliance: list[dict[str, float]] = []
            view = views[i]
            image_ok = view is not None and view.ok
            use_text = bool(ev.text.strip()) or not image_ok
            for head, res in results:
                image_z = self.images.logits(head.task, view) if image_ok else None
                text_z = res.logits[i] / head.temperature if use_text or image_z is None else None
                decision = fuse(text_z, image_z, self.images.weights(head.task))
                pred, probs = decision.pred, decision.probs
                reliance.append(decision.reliance)
                threshold = (
                    head.review_threshold
                    if self.review_threshold is None
                    else self.review_threshold
                )
                labels[head.task] = TaskLabel(
                    label=head.labels[pred],
                    score=round(float(probs[pred]), 5),
                    scores={
                        lab: round(float(p), 5) for lab, p in zip(head.labels, probs, strict=True)
                    },
                    calibrated=True,
                    needs_review=bool(probs[pred] < threshold) or not (use_text or image_ok),
                    modality=decision.reliance,
                )
                if self.top_k and ev.text and decision.text_weight:
                    analysis = analyses[i] if analyses is not None else None
                    shares = head.effects(enc, i, pred, analysis) * decision.text_weight
                    spans += top_words(
                        ev.text,
                        enc.offsets[i],
                        enc.word_ids[i],
                        shares,
                        head.task,
                        head.labels[pred],
                        self.top_k,
                    )
                if view is not None and image_ok and decision.image_weight:
                    cells += self.images.top_cells(
                        head.task, pred, view, decision.image_weight, self.cells_top_k
                    )
            links = []
            if view is not None and image_ok and spans:
                links = self.images.links(view, ev.text, spans, self.top_k)
            timing = {"encode": round((t_enc - t0) * 1000, 2)}
            if has_images:
                timing["image"] = round((t_img - t_enc) * 1000, 2)
            if received is not None:
                timing["queue"] = round((t0 - received[i]) * 1000, 2)
            out.append(
                LabeledEvent(
                    id=ev.id,
                    text=ev.text,
                    lang=ev.lang or detect_language(ev.text),
                    source=ev.source,
                    event=ev.event,
                    created_at=ev.created_at,
                    meta=ev.meta,
                    gold=ev.gold,
                    labels=labels,
                    needs_review=any(t.needs_review for t in labels.values()),
                    modality={
                        m: round(sum(r[m] for r in reliance) / len(reliance), 4)
                        for m in ("text", "image")
                    },
                    rationale=Rationale(text=spans, image=cells, links=links),
                    image_error=view.error if view is not None else None,
                    model=self.model_info,
                    origin=origins[i],
                    timing_ms=timing,
                )
            )
        t_end = time.perf_counter()
        total = round((t_end - t0) * 1000, 2)
        for o in out:
            o.timing_ms["batch"] = total
        timings = BatchTimings(t_enc - t0, t_img - t_enc if has_images else None, t_end - t0)
        return BatchResult(out, timings)
