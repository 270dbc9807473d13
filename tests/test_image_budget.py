"""Decoding cost per batch is bounded: past ``CRISIS_IMAGE_BATCH_MAX_PIXELS`` the remaining
images of a batch get an ``image_error`` (their events are labelled from text) instead of
being decoded, so a batch of large images cannot stall the worker."""

from __future__ import annotations

import time
from functools import cache

import numpy as np
import pytest
from PIL import Image

from stream.images.branch import ImageBranch
from stream.images.source import ImageOptions
from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.schemas import ImageRef, InputEvent, Origin
from stream.settings import Settings

from .image_utils import b64, encode, image_bundle


@pytest.fixture(scope="module")
def ibundle() -> Bundle:
    return image_bundle()


@cache
def _big_png() -> str:
    """A 5600 x 4200 PNG of a few tens of kB that takes about a quarter second to decode."""
    arr = np.zeros((4200, 5600, 3), dtype=np.uint8)
    arr[::50] = 255
    return b64(encode(Image.fromarray(arr), "PNG"))


def _events(n: int, image: str) -> list[InputEvent]:
    return [
        InputEvent(id=f"e{i}", text="bridge collapsed, people trapped", image=ImageRef(b64=image))
        for i in range(n)
    ]


def test_the_batch_pixel_budget_is_a_described_setting(monkeypatch: pytest.MonkeyPatch):
    field = Settings.model_fields["image_batch_max_pixels"]
    assert field.description and "batch" in field.description
    assert Settings().image_batch_max_pixels >= Settings().image_max_pixels
    monkeypatch.setenv("CRISIS_IMAGE_BATCH_MAX_PIXELS", "1000")
    assert ImageOptions.from_settings(Settings()).batch_max_pixels == 1000


def test_images_past_the_batch_budget_get_an_image_error(ibundle: Bundle):
    small = b64(encode(np.full((480, 640, 3), 120, dtype=np.uint8)))
    options = ImageOptions(batch_max_pixels=3 * 640 * 480)
    branch = ImageBranch(ibundle.image, options, ibundle.encoder)
    views = branch.run(_events(5, small))
    assert [v is not None and v.ok for v in views] == [True, True, True, False, False]
    assert all(
        v is not None and (v.error or "").startswith("batch_pixel_budget") for v in views[3:]
    )
    assert branch.run(_events(1, small))[0].ok  # type: ignore[union-attr]  # a new batch


def test_a_batch_of_large_images_is_cut_short_by_the_default_budget(ibundle: Bundle):
    big = _big_png()
    events = _events(12, big)
    pipeline = Pipeline(ibundle, 3, None, ImageOptions.from_settings(Settings()))
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(len(events))]
    t0 = time.process_time()
    outs = pipeline.label(events, origins)
    cpu = time.process_time() - t0
    refused = [o for o in outs if (o.image_error or "").startswith("batch_pixel_budget")]
    decoded = len(outs) - len(refused)
    per_image = 5600 * 4200
    assert decoded == Settings().image_batch_max_pixels // per_image
    assert refused and all(o.labels and o.modality["text"] == 1.0 for o in refused)
    assert cpu < 0.5 * len(events), f"{cpu:.1f}s of CPU for one batch"
