"""Content pooling: function words stay out of the pool (and their n-grams out of the lexicon),
the rationale stays exact, and function words are rarely named as reasons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stream.errors import BundleError
from stream.evaluation.faithfulness import faithfulness_report
from stream.local.demo import sample_events
from stream.models.bundle import Bundle, load_bundle
from stream.models.function_words import FunctionWords, function_words, packaged_json
from stream.models.manifest import sha256_file
from stream.models.text import pool_mask
from stream.pipeline import Pipeline
from stream.rationale import spread, word_tokens
from stream.schemas import InputEvent, Origin

from .conftest import BUNDLE

TEXTS = [
    *(InputEvent.model_validate_json(v).text for v in sample_events()),
    "Se necesitan voluntarios y agua potable en el refugio de la escuela",
    "Maraming bahay ang nasira ng bagyo sa Compostela Valley",
    "in the of",
]
FW = function_words()


def test_the_packaged_list_names_function_words_of_every_language():
    for word in ("in", "The", "of,", "de", "la", "ng", "sa", "und", "yang", "dans", "della"):
        assert word in FW, word
    for word in ("flood", "rescue", "#in", "son", "die", "no", "agua", "bagyo"):
        assert word not in FW, word  # content words, and open-class words of another language


def test_a_bundle_copy_of_the_list_is_what_it_loads(tmp_path: Path):
    raw = json.loads(packaged_json())
    raw["languages"] = {"xx": ["foo", "Bar"]}
    raw["ambiguous"] = ["foo"]
    path = tmp_path / "fw.json"
    path.write_text(json.dumps(raw))
    assert FunctionWords.load(path).words == frozenset({"bar"})


def _copy(src: Path, dst: Path) -> Path:
    """The test bundle's text side with content pooling and a lexicon without function words
    (heads as they are: exactness holds for any weights)."""
    manifest = json.loads((src / "manifest.json").read_text())
    manifest.pop("image_encoder", None)
    spec = manifest["text_encoder"]
    spec.pop("self_check", None)  # its reference embeddings were mean-pooled
    spec["files"] = {"int8": spec["files"]["int8"]}
    spec.update(pooling="mean_content", function_words="function_words.json")
    dst.mkdir()
    for name in (spec["files"]["int8"], spec["tokenizer"], *(h["file"] for h in manifest["heads"])):
        shutil.copyfile(src / name, dst / name)
    (dst / "function_words.json").write_bytes(packaged_json())
    if manifest.get("lexicon"):  # function-word n-grams out, as a content-pooled build does
        lex = json.loads((src / manifest["lexicon"]).read_text())
        keep = [not all(w in FW.words for w in t.split()) for t in lex["words"]]
        lex["words"] = [t for t, k in zip(lex["words"], keep, strict=True) if k]
        lex["word_idf"] = [v for v, k in zip(lex["word_idf"], keep, strict=True) if k]
        (dst / manifest["lexicon"]).write_text(json.dumps(lex))
        for h in manifest["heads"]:  # the heads' lexical columns, cut to match
            with np.load(src / h["file"]) as f:
                parts = dict(f)
            if "V" in parts:
                parts["V"] = parts["V"][:, np.asarray(keep, bool)]
            np.savez(dst / h["file"], **parts)
    manifest["files"] = {p.name: sha256_file(p) for p in dst.iterdir()}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return load_bundle(_copy(BUNDLE, tmp_path_factory.mktemp("b") / "content"))


def test_the_pool_leaves_function_words_out(content: Bundle):
    enc = content.encoder.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        pooled = enc.pooled[i]
        np.testing.assert_allclose(
            enc.tokens[i][pooled].sum(0) * enc.scale[i], enc.embeddings[i], rtol=1e-4, atol=1e-6
        )
        if text == "in the of":
            continue
        for start, end, tokens in word_tokens(enc.offsets[i], enc.word_ids[i]):
            assert pooled[tokens].all() == (text[start:end] not in FW), text[start:end]
    assert enc.pooled[-1].all(), "a text of function words only is pooled whole"


def test_effects_of_a_content_pooled_hybrid_explain_the_whole_logit(content: Bundle):
    enc = content.encoder.encode(TEXTS)
    analyses = content.analyse(TEXTS)
    for head in content.heads:
        out = head.predict(enc.embeddings, analyses)
        for i in range(len(TEXTS)):
            c, z = int(out.pred[i]), out.logits[i] / head.temperature
            h, scale, pooled = enc.tokens[i], float(enc.scale[i]), enc.pooled[i]
            analysis = analyses[i] if analyses is not None else None
            effects = head.effects(enc, i, c, analysis)
            token = head.token_effects(h, scale, c, pooled)
            assert token.sum() == pytest.approx(0.0, abs=1e-4)
            assert not token[~pooled].any(), "a token outside the pool has no effect"
            total = effects.sum() - token.sum() + head.token_shares(h, scale, c, pooled).sum()
            total += (head.bias[c] - head.bias.mean()) / head.temperature
            if head.lexical is not None:
                total += (head.lexical.bias[c] - head.lexical.bias.mean()) / head.temperature
            assert total == pytest.approx(z[c] - z.mean(), abs=1e-3)


def test_function_words_carry_only_their_share_of_mixed_bigrams(content: Bundle):
    """The encoder gives a function word nothing; the lexicon only half of a bigram it forms
    with a content word ("flood in"), so few function words are named as reasons."""
    texts = TEXTS[:-1]
    enc = content.encoder.encode(texts)
    analyses = content.analyse(texts)
    assert analyses is not None
    for head in content.heads:
        assert head.lexical is not None
        pred = head.predict(enc.embeddings, analyses).pred
        for i in range(len(texts)):
            c, pooled = int(pred[i]), enc.pooled[i]
            spans, shares = head.lexical.span_shares(analyses[i], c)
            lexical = spread(enc.offsets[i], enc.word_ids[i], spans, shares) / head.temperature
            effects = head.effects(enc, i, c, analyses[i])
            np.testing.assert_allclose(effects[~pooled], lexical[~pooled], atol=1e-6)
            assert not head.effects(enc, i, c)[~pooled].any()
    events = [InputEvent(id=str(i), text=t) for i, t in enumerate(texts)]
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(len(events))]
    assert all(out.rationale.text for out in Pipeline(content, top_k=5).label(events, origins))
    report = faithfulness_report(content, texts, None, k=5, repeats=1)
    assert report["function_word_share"] < report["function_word_share_random"] / 2, report


def test_content_pooling_without_its_word_list_is_refused(tmp_path: Path):
    dst = _copy(BUNDLE, tmp_path / "b")
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["text_encoder"].pop("function_words")
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="function-word file"):
        load_bundle(dst)


def test_plain_mean_pooling_pools_every_token():
    offsets, word_ids = [(0, 0), (0, 2), (3, 8), (0, 0)], [None, 0, 1, None]
    assert pool_mask("in flood", offsets, word_ids, None).all()
    assert pool_mask("in flood", offsets, word_ids, FW).tolist() == [True, False, True, True]


def test_builds_pool_content_unless_the_encoder_is_fine_tuned_on_crisismmd_splits():
    from stream.build.bundle import _command
    from stream.build.encoders import ENCODERS
    from stream.build.pooling import resolve_pooling

    for heads in ("corpus", "crisismmd"):
        assert resolve_pooling(None, finetune=False, heads=heads) == "mean_content"
        assert resolve_pooling("mean", finetune=False, heads=heads) == "mean"
    assert resolve_pooling(None, finetune=True, heads="corpus") == "mean_content"
    assert resolve_pooling(None, finetune=True, heads="crisismmd") == "mean"
    with pytest.raises(BundleError, match="--heads corpus"):
        resolve_pooling("mean_content", finetune=True, heads="crisismmd")
    e5 = ENCODERS["e5"]  # the rebuild line names only what differs from the defaults
    out = Path("b")
    assert _command(out, e5, True, True) == "crisis-stream models build --out b"
    assert _command(out, e5, True, True, finetune=True).endswith("--out b --finetune")
    assert _command(out, e5, True, True, "per-token", "crisismmd", True, "mean").endswith(
        "--heads crisismmd --finetune"
    )
    assert _command(out, e5, True, True, pooling="mean").endswith("--pooling mean")
    # fine-tuned across events, e5 keeps its first 8 layers unless told otherwise
    assert _command(out, e5, True, True, finetune=True, layers=8).endswith("--out b --finetune")
    assert _command(out, e5, True, True, finetune=True, layers=12).endswith("--layers 12")
    assert _command(out, e5, True, True, layers=8).endswith("--out b --layers 8")


def test_cached_embeddings_are_keyed_by_the_pooling(tmp_path: Path):
    from stream.build.corpus_embed import _key

    onnx, tok = tmp_path / "m.onnx", tmp_path / "t.json"
    onnx.write_bytes(b"m")
    tok.write_bytes(b"t")
    keys = {_key(onnx, tok, ["a"], skip) for skip in (None, FW, FunctionWords(frozenset({"x"})))}
    assert len(keys) == 3
