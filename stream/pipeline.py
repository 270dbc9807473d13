"""The labelling pipeline shared by the live worker and replay: events in, labelled out.

One code path for both, so a backtest measures exactly what production would publish.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from stream.models.bundle import Bundle
from stream.rationale import top_words
from stream.schemas import InputEvent, LabeledEvent, ModelInfo, Origin, Rationale, TaskLabel

__all__ = ["Pipeline"]


class Pipeline:
    """Encode a micro-batch once, apply every task head, attach exact rationales."""

    def __init__(self, bundle: Bundle, top_k: int = 5, review_threshold: float | None = None):
        self.bundle = bundle
        self.top_k = top_k
        self.review_threshold = review_threshold
        self.model_info = ModelInfo(**bundle.info)

    def label(
        self,
        events: Sequence[InputEvent],
        origins: Sequence[Origin],
        received: Sequence[float] | None = None,
    ) -> list[LabeledEvent]:
        if not events:
            return []
        t0 = time.perf_counter()
        enc = self.bundle.encoder.encode([e.text for e in events])
        t_enc = time.perf_counter()
        results = [(head, head.predict(enc.embeddings)) for head in self.bundle.heads]
        out: list[LabeledEvent] = []
        for i, ev in enumerate(events):
            labels: dict[str, TaskLabel] = {}
            spans = []
            for head, res in results:
                pred = int(res.pred[i])
                probs = res.probs[i]
                threshold = self.review_threshold or head.review_threshold
                labels[head.task] = TaskLabel(
                    label=head.labels[pred],
                    score=round(float(probs[pred]), 5),
                    scores={
                        lab: round(float(p), 5) for lab, p in zip(head.labels, probs, strict=True)
                    },
                    calibrated=True,
                    needs_review=bool(probs[pred] < threshold),
                )
                if self.top_k and ev.text:
                    shares = head.token_shares(enc.tokens[i], float(enc.scale[i]), pred)
                    spans += top_words(
                        ev.text,
                        enc.offsets[i],
                        enc.word_ids[i],
                        shares,
                        head.task,
                        head.labels[pred],
                        self.top_k,
                    )
            timing = {"encode": round((t_enc - t0) * 1000, 2)}
            if received is not None:
                timing["queue"] = round((t0 - received[i]) * 1000, 2)
            out.append(
                LabeledEvent(
                    id=ev.id,
                    text=ev.text,
                    lang=ev.lang,
                    source=ev.source,
                    event=ev.event,
                    created_at=ev.created_at,
                    meta=ev.meta,
                    gold=ev.gold,
                    labels=labels,
                    needs_review=any(t.needs_review for t in labels.values()),
                    modality={"text": 1.0, "image": 0.0},
                    rationale=Rationale(text=spans),
                    image_error="image input is not enabled in this build" if ev.image else None,
                    model=self.model_info,
                    origin=origins[i],
                    timing_ms=timing,
                )
            )
        total = round((time.perf_counter() - t0) * 1000, 2)
        for o in out:
            o.timing_ms["batch"] = total
        return out
