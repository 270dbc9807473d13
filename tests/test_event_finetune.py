"""The encoder fine-tuned across events: which messages it learns from, one encoder per fold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.build import event_finetune as ef
from stream.data.message import Message


def _messages(groups: int, per_group: int, held_every: int = 0) -> list[Message]:
    out = []
    for g in range(groups):
        for i in range(per_group):
            label = "informative" if i % 2 else "not_informative"
            labels = {"informative": label}
            if i % 3 == 0:
                labels["humanitarian"] = "other_relevant_information"
            out.append(
                Message(
                    f"g{g}-{i}",
                    "synthetic",
                    f"g{g}",
                    f"flood water near bridge {g} {i}" if i % 2 else f"lol game night {g} {i}",
                    labels,
                    benchmark_held_out=bool(held_every and i % held_every == 0),
                )
            )
    return out


@given(st.integers(1, 5), st.integers(1, 12), st.integers(1, 8), st.sets(st.integers(0, 4)))
def test_rows_are_a_capped_sample_of_each_group_outside_the_fold(
    groups: int, per_group: int, cap: int, excluded: set[int]
):
    msgs = _messages(groups, per_group, held_every=4)
    exclude = {f"g{g}" for g in excluded}
    rows = ef.event_rows(msgs, exclude, cap)
    assert rows == ef.event_rows(msgs[::-1], exclude, cap)  # the order messages come in: none
    held = {m.uid for m in msgs if m.benchmark_held_out}
    by_uid = {m.uid: m for m in msgs}
    sampled = {r.tweet_id for task_rows in rows.values() for r in task_rows}
    assert not sampled & held and all(by_uid[u].event not in exclude for u in sampled)
    for g in {by_uid[u].event for u in sampled}:
        assert sum(1 for u in sampled if by_uid[u].event == g) <= cap
    for task, task_rows in rows.items():  # a sampled message brings every label it has
        assert {r.tweet_id for r in task_rows} == {u for u in sampled if task in by_uid[u].labels}
        assert all(r.label == by_uid[r.tweet_id].labels[task] for r in task_rows)
    eligible = {m.event for m in msgs if m.event not in exclude and not m.benchmark_held_out}
    assert {by_uid[u].event for u in sampled} == eligible


def test_each_fold_gets_its_own_encoder_built_once(
    tiny_mpnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The encoder of a fold learns from the other folds' groups only, is built once (the
    second cross-validation reuses it), is built again when a label it learnt from changes,
    and embeds like any exported encoder."""
    from stream.build.export import SAMPLE_TEXTS, embed

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    trained_on: list[set[str]] = []
    real = ef.finetune

    def spy(train, *args, **kwargs):  # type: ignore[no-untyped-def]
        trained_on.append({r.event for rows in train.values() for r in rows})
        return real(train, *args, **kwargs)

    monkeypatch.setattr(ef, "finetune", spy)
    msgs = _messages(3, 12)
    tok = tiny_mpnet / "tokenizer.json"

    def encoder(fold: list[str], messages: list[Message] = msgs) -> Path:
        source = (tiny_mpnet, "tiny mpnet")
        return ef.fold_encoder(messages, fold, source, tok, SAMPLE_TEXTS, lambda _m: None)

    first, again, other = encoder(["g0"]), encoder(["g0"]), encoder(["g1"])
    assert first == again and first != other
    assert trained_on == [{"g1", "g2"}, {"g0", "g2"}]
    assert sorted(p.name for p in first.parent.iterdir()) == [ef.ENCODER]
    relabelled = [replace(m, labels={"informative": "informative"}) for m in msgs]
    assert encoder(["g0"], relabelled) != first and len(trained_on) == 3
    x = embed(first, tok, ["flood water near the bridge", "lol"])
    assert x.shape == (2, 32) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)


def test_a_build_with_heads_across_events_fine_tunes_on_them(tiny_mpnet: Path, tmp_path: Path):
    """``models build --finetune`` with heads across events fine-tunes on every group of the
    corpus (CrisisMMD, CrisisLexT26, Figure Eight), never on a CrisisMMD dev or test text."""
    from stream.build.bundle import _finetune
    from stream.build.encoders import ENCODERS
    from stream.data.corpus import load_corpus

    from .crisis_data import make_root

    root = make_root(tmp_path / "data")
    choice = replace(ENCODERS["e5"], locate=lambda: tiny_mpnet)
    tuned = _finetune(
        root / "crisismmd",
        tmp_path / "work",
        lambda _m: None,
        tiny_mpnet / "tokenizer.json",
        choice,
        "corpus",
    )
    corpus = load_corpus(root)
    assert tuned.manifest["groups"] == sorted({m.event for m in corpus.messages})
    assert tuned.manifest["recipe"].startswith("across events")
    held = [m for m in corpus.messages if m.benchmark_held_out]
    assert held and tuned.manifest["train_texts"] == len(
        {m.text for m in corpus.messages if not m.benchmark_held_out}
    )
    assert (tuned.model_dir / "config.json").is_file() and tuned.heads == {}


def test_a_fold_encoder_is_quantized_by_the_build_rule(
    tiny_mpnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A fold's encoder takes the first int8 candidate that meets the cosine bar, as a build
    does, and is served in fp32 when none does (as a build serves it)."""
    import onnx

    from stream.build import export

    def ops(path: Path) -> set[str]:
        return {n.op_type for n in onnx.load(str(path)).graph.node}

    texts = list(export.SAMPLE_TEXTS)
    quantized = ef.export_like_a_build(tiny_mpnet, tmp_path / "a.onnx", texts, texts)
    assert "MatMulInteger" in ops(quantized) and not (tmp_path / "a.fp32.onnx").exists()
    monkeypatch.setattr(export, "COSINE_BAR", 1.01)
    served = ef.export_like_a_build(tiny_mpnet, tmp_path / "b.onnx", texts, texts)
    assert "MatMulInteger" not in ops(served) and "MatMul" in ops(served)
