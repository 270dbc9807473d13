"""Hybrid heads: the numpy TF-IDF featurizer equals scikit-learn's, and the lexical term's
shares (spread onto tokens) explain the whole logit with the encoder's."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.errors import BundleError
from stream.local.demo import sample_events
from stream.models.bundle import Bundle, load_bundle
from stream.models.heads import LinearHead
from stream.models.lexicon import LexicalPart, Lexicon
from stream.rationale import spread
from stream.schemas import InputEvent

sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")

TEXTS = [InputEvent.model_validate_json(v).text for v in sample_events()]
CORPUS = [
    *TEXTS,
    "RT @CityOfHouston: Shelters open at GRB convention center #HurricaneHarvey #Harvey",
    "Donate to @RedCross to help the victims of the Mexico earthquake https://t.co/x1",
    "Bridge collapsed, roads flooded, power lines down in Puerto Rico after Maria",
    "lol my cat is scared of the storm 😂😂 #mood",
]


def _vectorizers() -> tuple[object, object]:
    opts = {"min_df": 1, "sublinear_tf": True}
    word = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), **opts).fit(CORPUS)
    char = sklearn_text.TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **opts).fit(CORPUS)
    return word, char


def _lexicon() -> Lexicon:
    word, char = _vectorizers()

    def terms(v: object) -> list[str]:
        vocab = v.vocabulary_  # type: ignore[attr-defined]
        return sorted(vocab, key=vocab.get)

    return Lexicon(terms(word), word.idf_, terms(char), char.idf_)  # type: ignore[attr-defined]


LEXICON = _lexicon()
WORD, CHAR = _vectorizers()


def _dense(text: str) -> np.ndarray:
    a = LEXICON.analyse(text)
    out = np.zeros(LEXICON.size, np.float32)
    out[a.ids] = a.values
    return out


def _reference(text: str) -> np.ndarray:
    w = WORD.transform([text]).toarray()[0]  # type: ignore[attr-defined]
    c = CHAR.transform([text]).toarray()[0]  # type: ignore[attr-defined]
    return np.concatenate([w, c])


@pytest.mark.parametrize("text", [*CORPUS, "", "a", "  x  y\t\nzz ", "İstanbul ΣΟΦΊΑ café"])
def test_features_equal_scikit_learn(text: str):
    np.testing.assert_allclose(_dense(text), _reference(text), atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["flood", "Flood", "#flood", "help", "red", "cross", "the", "a", "@x", "!!", "é", "😂"]
        )
        | st.text(max_size=6),
        max_size=12,
    ),
    st.sampled_from([" ", "  ", "\n", "\t", ", "]),
)
def test_features_equal_scikit_learn_on_generated_text(words: list[str], sep: str):
    text = sep.join(words)
    np.testing.assert_allclose(_dense(text), _reference(text), atol=1e-6)


LINKED = [
    "Help https://t.co/x1AbC now",
    "https://t.co/only",
    "Shelter open http://bit.ly/2xYz https://t.co/q #Harvey",
    "no link at all, https:// nothing",
]


def test_dropped_links_equal_scikit_learn_and_are_no_features():
    """The build's lexicon blanks links the same way in scikit-learn and in numpy; a link adds
    no feature and no span, and the other words keep their offsets."""
    from stream.build.hybrid import _preprocess, fit_lexicon

    lexicon = fit_lexicon(CORPUS + LINKED + CORPUS + LINKED)  # min_df 2: every term kept
    assert Lexicon.from_dict(lexicon.to_dict()).drop_links
    opts = {"min_df": 2, "sublinear_tf": True, "preprocessor": _preprocess}
    fit = CORPUS + LINKED + CORPUS + LINKED
    word = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), **opts).fit(fit)
    char = sklearn_text.TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **opts).fit(fit)
    stripped = [re.sub(r"https?://\S+", "", t) for t in fit]
    plain = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit(stripped)
    assert set(word.vocabulary_) == set(plain.vocabulary_)  # as if the links were never there
    assert "https" in word.vocabulary_  # "https://" alone is no link: kept as a word
    for text in LINKED + CORPUS:
        a = lexicon.analyse(text)
        dense = np.zeros(lexicon.size, np.float32)
        dense[a.ids] = a.values
        ref = np.concatenate(
            [word.transform([text]).toarray()[0], char.transform([text]).toarray()[0]]
        )
        np.testing.assert_allclose(dense, ref, atol=1e-6)
        for start, end in a.spans:
            assert "://" not in text[start:end] or text[start:end] == "https://"
            assert text[start:end].strip() == text[start:end]
    same = [lexicon.analyse(t) for t in ("Help https://t.co/x1AbC now", "Help now")]
    np.testing.assert_allclose(same[0].values, same[1].values, atol=1e-7)
    assert list(same[0].ids) == list(same[1].ids)
    assert lexicon.analyse("Help https://t.co/x1AbC now").spans[-1].tolist() == [24, 27]


def test_a_lexicon_without_function_word_ngrams_equals_scikit_learn_on_its_vocabulary():
    """Content-pooled bundles' lexicons drop the n-grams made of function words only ("in",
    "of the"); a bigram with a content word stays ("flood in"), and the features of the kept
    vocabulary equal scikit-learn's with that vocabulary."""
    from stream.build.hybrid import _preprocess, fit_lexicon
    from stream.models.function_words import function_words

    texts = [*CORPUS, "Flood in Houston, flood in the city of Houston"] * 2
    lexicon = fit_lexicon(texts, chars=False, skip=function_words())
    assert {"flood in", "flood", "houston"} <= set(lexicon.words)
    assert not {"in", "the", "of", "in the", "to the"} & set(lexicon.words)
    vocab = sorted(lexicon.words, key=lexicon.words.get)
    opts = {"min_df": 2, "sublinear_tf": True, "preprocessor": _preprocess}
    ref = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), vocabulary=vocab, **opts).fit(texts)
    np.testing.assert_allclose(lexicon.idf, ref.idf_)
    for text in texts:
        a = lexicon.analyse(text)
        dense = np.zeros(lexicon.size)
        dense[a.ids] = a.values
        np.testing.assert_allclose(dense, ref.transform([text]).toarray()[0], atol=1e-6)


def _part(k: int, seed: int = 0) -> LexicalPart:
    rng = np.random.default_rng(seed)
    return LexicalPart(LEXICON, rng.normal(size=(k, LEXICON.size)), rng.normal(size=k))


def test_lexical_span_shares_sum_to_the_centred_lexical_logit():
    part = _part(3)
    for text in CORPUS:
        a = LEXICON.analyse(text)
        z = part.logits([a])[0]
        for c in range(3):
            spans, shares = part.span_shares(a, c)
            centred = (z[c] - z.mean()) - (part.bias[c] - part.bias.mean())
            assert shares.sum() == pytest.approx(centred, abs=1e-4)
            assert all(0 <= s < e <= len(text) for s, e in spans)


def test_spread_splits_a_span_over_the_tokens_it_covers():
    offsets = [(0, 0), (0, 3), (3, 5), (6, 9), (0, 0)]
    word_ids = [None, 0, 0, 1, None]
    spans = np.array([(0, 5), (6, 9), (20, 25)])
    out = spread(offsets, word_ids, spans, np.array([1.0, -0.5, 9.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 0.5, -0.5, 0.0])


def test_hybrid_effects_explain_the_whole_calibrated_logit(bundle: Bundle):
    """Encoder shares + bias + lexical shares = the hybrid head's centred calibrated logit."""
    enc = bundle.encoder.encode(TEXTS)
    analyses = [LEXICON.analyse(t) for t in TEXTS]
    for base in bundle.heads:
        k = len(base.labels)
        head = LinearHead(
            base.task, base.labels, base.weight, base.bias, 0.8, 0.5, _part(k, seed=k)
        )
        out = head.predict(enc.embeddings, analyses)
        with pytest.raises(ValueError, match="hybrid"):
            head.predict(enc.embeddings)
        for i in range(len(TEXTS)):
            c = int(out.pred[i])
            z = out.logits[i] / head.temperature
            h, scale, pooled = enc.tokens[i], float(enc.scale[i]), enc.pooled[i]
            effects = head.effects(enc, i, c, analyses[i])
            total = (
                effects.sum()
                + head.token_shares(h, scale, c, pooled).sum()
                - head.token_effects(h, scale, c, pooled).sum()
                + (head.bias[c] - head.bias.mean()) / head.temperature
                + (head.lexical.bias[c] - head.lexical.bias.mean()) / head.temperature  # type: ignore[union-attr]
            )
            assert total == pytest.approx(z[c] - z.mean(), abs=1e-3)


def test_a_hybrid_head_without_its_lexicon_is_refused(bundle: Bundle, tmp_path: Path):
    copy = tmp_path / "b"
    shutil.copytree(bundle.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.pop("lexicon", None)
    manifest["heads"][0]["lexical"] = True
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no lexicon"):
        load_bundle(copy)


def test_a_lexical_head_file_under_a_plain_head_entry_is_refused(bundle: Bundle, tmp_path: Path):
    if bundle.heads[0].lexical is None:
        pytest.skip("the bundle was built without CrisisMMD: its heads are not hybrid")
    copy = tmp_path / "b"
    shutil.copytree(bundle.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["heads"][0]["lexical"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lexical part"):
        load_bundle(copy)
