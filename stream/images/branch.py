"""The image branch of the pipeline: load, decode, encode a micro-batch of images, then turn
each into calibrated per-task logits, exact cell rationales and cross-modal links.

An image problem never drops an event: its :class:`ImageView` carries the error instead, and
the pipeline labels the event from its text with ``image_error`` set. That includes a URL not
fetched within the batch's time budget (:class:`stream.images.source.BatchLoader`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stream.images.decode import ImageError, decode_image
from stream.images.source import BatchLoader, ImageOptions
from stream.models.image import ImageModel
from stream.models.manifest import FusionWeights
from stream.models.text import TextEncoder
from stream.schemas import ImageCell, InputEvent, RationaleLink, TextSpan

__all__ = ["ImageBranch", "ImageView", "cell_box"]

log = logging.getLogger(__name__)

# Function words carry weight in a text head but name nothing an image could show.
_STOP_WORDS = (
    "a an the and or but if of in on at to for from by with without about as into onto over "
    "under after before during through is are was were be been being am do does did has have "
    "had will would can could should may might must shall this that these those it its he "
    "she they them their his her our your my we you i me us not no so than then there here "
    "just very too also all any some more most such what which who whom whose when where why "
    "how rt via amp http https"
)
_STOP = frozenset(_STOP_WORDS.split())
_CACHE_SIZE = 4096


def cell_box(index: int, grid: int, width: int, height: int) -> list[int]:
    """[x, y, w, h] in original image pixels of row-major grid cell ``index``."""
    row, col = divmod(index, grid)
    x0, x1 = round(col * width / grid), round((col + 1) * width / grid)
    y0, y1 = round(row * height / grid), round((row + 1) * height / grid)
    return [x0, y0, x1 - x0, y1 - y0]


@dataclass
class ImageView:
    """One event's image: an error, or its size and concept encoding (cells as tokens)."""

    error: str | None = None
    width: int = 0
    height: int = 0
    embedding: np.ndarray | None = None
    cells: np.ndarray | None = None
    scale: float = 0.0
    top_class: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.embedding is not None


class ImageBranch:
    """Per-batch image work for :class:`stream.pipeline.Pipeline`."""

    def __init__(
        self,
        model: ImageModel | None,
        options: ImageOptions | None = None,
        text_encoder: TextEncoder | None = None,
    ) -> None:
        self.model = model
        self.options = options or ImageOptions()
        self.text_encoder = text_encoder
        self.loader = BatchLoader(self.options)
        self._words: OrderedDict[str, np.ndarray] = OrderedDict()

    def run(
        self, events: Sequence[InputEvent], progress: Callable[[], None] | None = None
    ) -> list[ImageView | None]:
        """One view per event (None when the event has no image), images encoded together.

        ``progress`` is called while the batch's URLs are being fetched (after each completed
        fetch and at least every second), so a caller can show it is alive meanwhile.
        """
        if self.model is None:
            error = "no_image_encoder: this bundle has no image encoder"
            return [None if ev.image is None else ImageView(error=error) for ev in events]
        views: list[ImageView | None] = [None] * len(events)
        pending: list[tuple[int, np.ndarray]] = []
        opts = self.options
        size = self.model.encoder.size
        left = opts.batch_max_pixels  # decoding cost of this batch, in header pixels
        wanted = [(i, ev.image) for i, ev in enumerate(events) if ev.image is not None]
        loaded = self.loader.load([ref for _, ref in wanted], progress)
        for (i, _), data in zip(wanted, loaded, strict=True):
            try:
                if isinstance(data, Exception):
                    raise data
                img = decode_image(data, size, opts.max_pixels, opts.max_bytes, batch_left=left)
            except ImageError as exc:
                views[i] = ImageView(error=str(exc))
                continue
            except Exception as exc:  # an image problem never drops an event
                log.warning("image of event %s failed unexpectedly", events[i].id, exc_info=exc)
                views[i] = ImageView(error=f"image_failed: {type(exc).__name__}")
                continue
            left -= img.width * img.height
            views[i] = ImageView(width=img.width, height=img.height)
            pending.append((i, img.pixels))
        if pending and self.model is not None:
            try:
                _, concepts = self.model.encode([p for _, p in pending])
            except Exception as exc:  # an encoder failure must not drop the events
                log.exception("image encoding failed for %d images", len(pending))
                for i, _ in pending:
                    views[i] = ImageView(error=f"encode_failed: {type(exc).__name__}: {exc}")
                return views
            for row, (i, _) in enumerate(pending):
                view = views[i]
                assert view is not None
                view.embedding = concepts.embeddings[row]
                view.cells = concepts.cells[row]
                view.scale = float(concepts.scale[row])
                view.top_class = concepts.top_class[row]
        return views

    def weights(self, task: str) -> FusionWeights:
        return self.model.weights(task) if self.model is not None else FusionWeights()

    def logits(self, task: str, view: ImageView | None) -> np.ndarray | None:
        """Calibrated image logits of ``task`` (None: no usable image or no image head)."""
        if self.model is None or view is None or not view.ok or task not in self.model.heads:
            return None
        head = self.model.heads[task]
        assert view.embedding is not None
        return np.asarray(head.predict(view.embedding[None]).logits[0] / head.temperature)

    def top_cells(
        self, task: str, label: int, view: ImageView, weight: float, k: int
    ) -> list[ImageCell]:
        """The ``k`` cells with the largest exact share (times the modality weight) of the
        fused, centred logit of ``label``, as boxes in original pixels with their concept."""
        if self.model is None or not view.ok or k <= 0:
            return []
        head = self.model.heads[task]
        assert view.cells is not None and view.top_class is not None
        shares = head.token_shares(view.cells, view.scale, label) * weight
        grid = self.model.encoder.grid
        out = []
        for j in np.argsort(-np.abs(shares))[:k]:
            x, y, w, h = cell_box(int(j), grid, view.width, view.height)
            out.append(
                ImageCell(
                    task=task,
                    label=head.labels[label],
                    x=x,
                    y=y,
                    w=w,
                    h=h,
                    weight=round(float(shares[j]), 5),
                    concept=self.model.concepts.short[int(view.top_class[j])],
                )
            )
        return out

    def _word_vectors(self, words: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit text embeddings of single words, encoded once and kept in a bounded LRU."""
        missing = [w for w in dict.fromkeys(words) if w not in self._words]
        if missing and self.text_encoder is not None:
            emb = self.text_encoder.encode(missing).embeddings
            for w, e in zip(missing, emb, strict=True):
                self._words[w] = e
            while len(self._words) > _CACHE_SIZE:
                self._words.popitem(last=False)
        out = {}
        for w in words:
            if w in self._words:
                self._words.move_to_end(w)
                out[w] = self._words[w]
        return out

    def links(
        self, view: ImageView, text: str, spans: Sequence[TextSpan], k: int
    ) -> list[RationaleLink]:
        """For each content word that supports a label, the cell whose concept vector is most
        similar to the word's text embedding (cosine); the ``k`` strongest pairs."""
        if self.model is None or not view.ok or k <= 0:
            return []
        assert view.cells is not None
        chosen: dict[str, tuple[int, int]] = {}
        for span in spans:
            word = text[span.start : span.end].lower().strip("#@")
            if span.weight > 0 and len(word) > 2 and word.isalpha() and word not in _STOP:
                chosen.setdefault(word, (span.start, span.end))
        if not chosen:
            return []
        vectors = self._word_vectors(list(chosen))
        cells = view.cells / np.maximum(np.linalg.norm(view.cells, axis=1, keepdims=True), 1e-9)
        found = []
        for word, (start, end) in chosen.items():
            if word in vectors:
                sims = cells @ vectors[word]
                j = int(np.argmax(sims))
                found.append((float(sims[j]), [start, end], j))
        found.sort(key=lambda f: -f[0])
        grid = self.model.encoder.grid
        return [
            RationaleLink(
                text_span=span,
                image_cell=cell_box(j, grid, view.width, view.height),
                weight=round(sim, 4),
            )
            for sim, span, j in found[:k]
        ]
