"""Late fusion, exact image rationales, and mixed text/image events end to end (through a real
broker), with hostile images labelled from text and flagged with ``image_error``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stream.build.calibration import fit_temperature, fit_weights
from stream.errors import BundleIntegrityError
from stream.fusion import FusionWeights, fuse
from stream.images.decode import decode_image
from stream.images.source import ImageOptions
from stream.models.bundle import Bundle, load_bundle
from stream.models.numeric import softmax
from stream.pipeline import Pipeline
from stream.runtime import make_sink, make_source
from stream.schemas import InputEvent, LabeledEvent, Origin
from stream.worker import Worker

from .conftest import BrokerHandle
from .image_utils import b64, encode, hostile_images, image_bundle, image_bundle_path, sample_rgb
from .kafka_utils import create_topics, read_all, seed

# -- fusion arithmetic ----------------------------------------------------------------------

logits = arrays(np.float64, st.integers(2, 6), elements=st.floats(-20, 20))


@settings(max_examples=200, deadline=None)
@given(zt=logits, zi_seed=st.integers(0, 2**31), wt=st.floats(0, 3), wi=st.floats(0, 3))
def test_fused_decision_splits_exactly_into_modalities(zt, zi_seed, wt, wi):
    zi = np.random.default_rng(zi_seed).normal(0, 5, size=zt.shape)
    d = fuse(zt, zi, FusionWeights(wt, wi))
    z = wt * zt + wi * zi
    np.testing.assert_allclose(d.probs, softmax(z), atol=1e-9)
    k = d.pred
    assert k == int(np.argmax(d.probs))
    # the fused centred logit is the sum of the two modality parts
    parts = wt * (zt[k] - zt.mean()) + wi * (zi[k] - zi.mean())
    assert parts == pytest.approx(z[k] - z.mean(), abs=1e-9)
    assert d.reliance["text"] + d.reliance["image"] == pytest.approx(1.0, abs=2e-4)
    assert min(d.reliance.values()) >= 0


def test_a_missing_modality_leaves_the_other_alone_and_calibrated():
    zt = np.array([2.0, -1.0])
    d = fuse(zt, None, FusionWeights(1.5, 0.5))
    np.testing.assert_allclose(d.probs, softmax(zt))
    assert (d.text_weight, d.image_weight, d.reliance) == (1.0, 0.0, {"text": 1.0, "image": 0.0})
    d = fuse(None, zt, FusionWeights(1.5, 0.5))
    assert (d.text_weight, d.image_weight, d.reliance["image"]) == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        fuse(None, None, FusionWeights())


def _synthetic(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, 3))
    p = softmax(z / temperature)
    y = np.array([rng.choice(3, p=row) for row in p])
    return z, y


def test_fit_temperature_recovers_the_true_temperature():
    for true_t in (0.5, 2.0, 4.0):
        z, y = _synthetic(4000, true_t, 1)
        assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.15)


def test_fit_weights_ignores_a_useless_modality_and_uses_a_useful_one():
    z, y = _synthetic(3000, 1.0, 2)
    noise = np.random.default_rng(3).normal(0, 3, size=z.shape)
    weights, _ = fit_weights(z, noise, y)
    assert weights.image == 0.0 and weights.text > 0
    weights, _ = fit_weights(noise, z, y)
    assert weights.text == 0.0 and weights.image > 0


# -- exactness of the image side (real model) ------------------------------------------------


@pytest.fixture(scope="module")
def ibundle() -> Bundle:
    return image_bundle()


def test_cell_logits_average_to_the_imagenet_logits(ibundle: Bundle):
    image = ibundle.image
    assert image is not None
    enc = image.encoder.encode([decode_image(encode(sample_rgb())).pixels])
    cells = image.concepts.cell_logits(enc.features)
    assert cells.shape == (1, 49, 1000)
    # exact CAM; the int8 graph quantizes its own classifier, so allow its rounding there
    tol = 1e-3 if image.precision == "fp32" else 0.35
    np.testing.assert_allclose(cells.mean(axis=1), enc.logits, atol=tol)
    top = image.concepts.short[int(enc.logits[0].argmax())]
    assert top in {"bell cote", "boathouse", "palace", "lakeside", "monastery", "pagoda"}


def test_cell_shares_add_up_to_the_image_logit(ibundle: Bundle):
    image = ibundle.image
    assert image is not None
    _, concepts = image.encode([decode_image(encode(sample_rgb("flower.jpg"))).pixels])
    np.testing.assert_allclose(
        concepts.cells[0].sum(axis=0) * concepts.scale[0], concepts.embeddings[0], atol=1e-5
    )
    for task, head in image.heads.items():
        z = head.predict(concepts.embeddings).logits[0] / head.temperature
        for k in range(len(head.labels)):
            shares = head.token_shares(concepts.cells[0], float(concepts.scale[0]), k)
            bias = (head.bias[k] - head.bias.mean()) / head.temperature
            assert shares.sum() + bias == pytest.approx(z[k] - z.mean(), rel=1e-4, abs=1e-4), task


# -- the pipeline with images ----------------------------------------------------------------


def _mixed_events(root: Path) -> list[InputEvent]:
    (root / "flower.png").write_bytes(encode(sample_rgb("flower.jpg"), "PNG"))
    china = b64(encode(sample_rgb()))
    events = [
        {"id": "both", "text": "Flood water rising around the temple, boats needed",
         "image": {"b64": china}},
        {"id": "image-only", "text": "", "image": {"path": "flower.png"}},
        {"id": "text-only", "text": "Bridge closed after the storm damaged the road"},
        {"id": "outside-root", "text": "shelter open downtown", "image": {"path": "/etc/hostname"}},
        {"id": "url-off", "text": "power is out", "image": {"url": "http://127.0.0.1:9/x.jpg"}},
    ]  # fmt: skip
    for name, (data, _kind) in hostile_images().items():
        events.append({"id": f"hostile-{name}", "text": f"rescue teams on site {name}",
                       "image": {"b64": b64(data)}})  # fmt: skip
    return [InputEvent.model_validate(e) for e in events]


def _check_output(o: dict[str, object] | LabeledEvent, tasks: set[str]) -> None:
    out = o if isinstance(o, LabeledEvent) else LabeledEvent.model_validate(o)
    assert set(out.labels) == tasks
    assert out.modality["text"] + out.modality["image"] == pytest.approx(1.0, abs=1e-3)
    for lab in out.labels.values():
        assert sum(lab.scores.values()) == pytest.approx(1.0, abs=1e-3)
    if out.image_error is None and out.rationale.image:
        w = h = 0
        for c in out.rationale.image:
            assert c.x >= 0 and c.y >= 0 and c.w > 0 and c.h > 0 and c.concept
            w, h = max(w, c.x + c.w), max(h, c.y + c.h)
        assert (w, h) <= (640, 427)  # both sample photos are 640x427: cells inside the image
        for link in out.rationale.links:
            start, end = link.text_span
            assert 0 <= start < end <= len(out.text)
            x, y, cw, ch = link.image_cell
            assert x + cw <= 640 and y + ch <= 427


def test_pipeline_labels_mixed_events_and_survives_hostile_images(ibundle: Bundle, tmp_path):
    events = _mixed_events(tmp_path)
    pipeline = Pipeline(ibundle, 5, None, ImageOptions(root=tmp_path))
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(len(events))]
    outs = {o.id: o for o in pipeline.label(events, origins)}
    tasks = {h.task for h in ibundle.heads}
    for o in outs.values():
        _check_output(o, tasks)
    both, image_only, text_only = outs["both"], outs["image-only"], outs["text-only"]
    assert both.image_error is None and 0 < both.modality["image"] < 1
    assert both.rationale.text and both.rationale.image and both.rationale.links
    assert image_only.modality == {"text": 0.0, "image": 1.0} and not image_only.rationale.text
    assert len({(c.task, c.x, c.y) for c in image_only.rationale.image}) == 5 * len(tasks)
    assert text_only.modality == {"text": 1.0, "image": 0.0} and text_only.image_error is None
    # text-only labels are exactly the text heads' (fusion does not touch them); encoded as
    # one batch like the pipeline does (a per-tensor int8 fallback scales per batch)
    texts = [e.text for e in events]
    enc = ibundle.encoder.encode(texts)
    row = [e.id for e in events].index("text-only")
    for head in ibundle.heads:
        probs = head.predict(enc.embeddings, ibundle.analyse(texts)).probs[row]
        assert text_only.labels[head.task].label == head.labels[int(probs.argmax())]
        assert text_only.labels[head.task].score == pytest.approx(float(probs.max()), abs=1e-5)
    assert outs["outside-root"].image_error.startswith("path_refused")
    assert outs["url-off"].image_error.startswith("fetch_disabled")
    for name, (_data, kind) in hostile_images().items():
        o = outs[f"hostile-{name}"]
        assert o.image_error.startswith(kind), (name, o.image_error)
        assert o.modality == {"text": 1.0, "image": 0.0} and not o.rationale.image
        assert o.rationale.text  # labelled from its text


def test_bundles_without_an_image_side_still_work(ibundle: Bundle, tmp_path):
    src = image_bundle_path()
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    manifest = orjson.loads((dst / "manifest.json").read_bytes())
    manifest.pop("image_encoder")
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest))
    text_only = load_bundle(dst)
    assert text_only.image is None
    ev = InputEvent(id="x", text="houses flooded", image={"b64": b64(encode(sample_rgb()))})
    out = Pipeline(text_only).label([ev], [Origin(topic="t", partition=0, offset=0)])[0]
    assert out.image_error.startswith("no_image_encoder") and out.modality["text"] == 1.0


def test_a_tampered_image_encoder_is_refused(tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(image_bundle_path(), dst)
    spec = orjson.loads((dst / "manifest.json").read_bytes())["image_encoder"]
    target = dst / spec["files"][spec["precision"]]
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleIntegrityError):
        load_bundle(dst)


@pytest.mark.kafka
def test_mixed_events_through_a_real_broker(noida: BrokerHandle, tmp_path):
    bundle = image_bundle()
    settings = noida.settings(bundle=image_bundle_path())
    create_topics(settings, input_partitions=2)
    events = _mixed_events(tmp_path)
    values = [orjson.dumps(e.model_dump(mode="json", exclude_none=True)) for e in events]
    seed(noida.bootstrap, settings.input_topic, values)
    pipeline = Pipeline(bundle, 5, None, ImageOptions(root=tmp_path))
    worker = Worker(
        settings, make_source("kafka", settings), make_sink("kafka", settings), pipeline
    )
    stats = worker.run(stop_after=len(values), idle_timeout_s=60)
    assert stats.labeled == len(values) and stats.dead_letters == 0
    outs = {o["id"]: o for o in read_all(noida.bootstrap, settings.output_topic, len(values))}
    assert set(outs) == {e.id for e in events}
    tasks = {h.task for h in bundle.heads}
    for o in outs.values():
        _check_output(o, tasks)
        assert o["rationale"]["text"] or o["id"] == "image-only"
        assert o["origin"]["topic"] == settings.input_topic
    assert outs["both"]["rationale"]["image"] and outs["image-only"]["modality"]["image"] == 1.0
    hostile = [o for i, o in outs.items() if i.startswith("hostile-")]
    assert hostile and all(o["image_error"] and o["modality"]["image"] == 0 for o in hostile)
