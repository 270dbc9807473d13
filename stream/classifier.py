"""In-process labelling without Kafka: ``Classifier.load(bundle).predict(texts or events)``.

The same :class:`~stream.pipeline.Pipeline` the worker runs (built by
:func:`stream.runtime.build_pipeline`), so a label given here is the label the worker would
publish for the same event; only the ``origin`` differs: a local one (topic ``"classifier"``,
partition 0, offset = the item's index) instead of a Kafka record's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from stream.decode import validate_event
from stream.errors import InvalidEvent
from stream.pipeline import Pipeline
from stream.runtime import build_pipeline
from stream.schemas import InputEvent, LabeledEvent, ModelInfo, Origin
from stream.settings import Settings
from stream.settings_load import load_settings

__all__ = ["Classifier", "Item"]

#: what :meth:`Classifier.predict` takes: a text, an event, or a dict shaped like an event
#: (``id`` may be left out: it defaults to the item's index)
Item: TypeAlias = str | InputEvent | Mapping[str, Any]


class Classifier:
    """Label texts or events with a model bundle: labels, calibrated scores and rationales.

    ``bundle_dir`` below is a model bundle directory, such as ``"models/e5-crisis"``:

    >>> from stream import Classifier
    >>> clf = Classifier.load(bundle_dir)
    >>> clf.predict(["Bridge collapsed after the flood, two dead"])[0].labels[
    ...     "informative"
    ... ].label == "informative"
    True
    >>> event = clf.predict([{"id": "t1", "text": "Bridge collapsed after the flood, two dead"}])[0]
    >>> event.id, event.origin.topic, event.origin.offset
    ('t1', 'classifier', 0)
    >>> sorted(event.labels) == sorted(clf.tasks)
    True
    >>> all(span.task in clf.tasks for span in event.rationale.text)
    True
    >>> clf.labels(["Bridge collapsed after the flood, two dead"])[0]["informative"]
    'informative'

    Items are labelled ``batch_size`` at a time, sorted by text length so that each batch pads
    little; the results come back in input order.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        batch_size: int = 32,
        source: str = "classifier",
        max_text_chars: int = 4_000,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.source = source
        self.max_text_chars = max_text_chars

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path | None = None,
        precision: str | None = None,
        threads: int | None = None,
        *,
        batch_size: int | None = None,
        source: str = "classifier",
        settings: Settings | None = None,
    ) -> Classifier:
        """Load and verify a bundle (:class:`~stream.errors.BundleError` if it is unusable).

        ``precision`` is ``"int8"`` or ``"fp32"`` (default: the bundle's), ``threads`` the
        onnxruntime intra-op threads (default: onnxruntime's choice), ``batch_size`` the events
        per encoder call (default: ``CRISIS_BATCH_MAX_EVENTS``, 32). Every other setting
        (review threshold, rationale words, image options, text limit) comes from ``settings``,
        or from the ``CRISIS_*`` environment as for the worker.
        """
        overrides: dict[str, Any] = {
            "bundle": Path(bundle_dir) if bundle_dir is not None else None,
            "precision": precision,
            "threads": threads,
            "batch_max_events": batch_size,
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        return cls(
            build_pipeline(settings),
            batch_size=settings.batch_max_events,
            source=source,
            max_text_chars=settings.max_text_chars,
        )

    @property
    def tasks(self) -> list[str]:
        """The bundle's tasks, in the order of its heads."""
        return [head.task for head in self.pipeline.bundle.heads]

    @property
    def model(self) -> ModelInfo:
        """The bundle's name, version, sha256 and quantization (as in every labelled event)."""
        return self.pipeline.model_info

    def event(self, item: Item, index: int = 0) -> InputEvent:
        """``item`` as a validated event, with the worker's rules (raises
        :class:`~stream.errors.InvalidEvent` with its reason code). A text or a dict without
        ``id`` gets ``str(index)`` as its id."""
        if isinstance(item, InputEvent):
            return item
        if isinstance(item, str):
            doc: dict[str, Any] = {"id": str(index), "text": item}
        elif isinstance(item, Mapping):
            doc = {"id": str(index), **item}
        else:
            raise TypeError(f"expected a str, an InputEvent or a dict, got {type(item).__name__}")
        return validate_event(doc, self.max_text_chars)

    def predict(
        self, items: Iterable[Item], *, offsets: Sequence[int] | None = None
    ) -> list[LabeledEvent]:
        """Label ``items`` (texts, events, or dicts shaped like events); one
        :class:`~stream.schemas.LabeledEvent` per item, in input order.

        ``offsets`` are the items' origin offsets and default ids (default: 0, 1, 2, ...).
        An invalid item raises :class:`~stream.errors.InvalidEvent` naming its index before
        anything is labelled.
        """
        items = list(items)
        if offsets is None:
            offsets = range(len(items))
        elif len(offsets) != len(items):
            raise ValueError(f"{len(offsets)} offsets for {len(items)} items")
        events: list[InputEvent] = []
        for i, (item, offset) in enumerate(zip(items, offsets, strict=True)):
            try:
                events.append(self.event(item, offset))
            except InvalidEvent as exc:
                raise InvalidEvent(exc.kind, f"item {i}: {exc.message}") from None
        order = sorted(range(len(events)), key=lambda i: len(events[i].text))
        out: list[LabeledEvent | None] = [None] * len(events)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            origins = [Origin(topic=self.source, partition=0, offset=offsets[i]) for i in idx]
            labelled = self.pipeline.label([events[i] for i in idx], origins)
            for i, ev in zip(idx, labelled, strict=True):
                out[i] = ev
        return [ev for ev in out if ev is not None]

    def labels(self, items: Iterable[Item]) -> list[dict[str, str]]:
        """Just the label of each task per item: ``[{"informative": "informative", ...}]``."""
        return [
            {task: result.label for task, result in ev.labels.items()} for ev in self.predict(items)
        ]
