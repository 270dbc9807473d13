"""The int8 encoder's load-time check against the build's fp32 reference embeddings."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream.errors import BundleError
from stream.models.bundle import load_bundle, sha256_file
from stream.models.selfcheck import CHECK_FILE


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data-free MiniLM bundle (zero-shot heads, no image side): about 20 s."""
    pytest.importorskip("torch", reason="building needs the build extra")
    from stream.build.bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("sc") / "b", None, lambda _m: None)


def _with_reference(src: Path, dst: Path, transform: object) -> Path:
    """A copy of ``src`` whose reference embeddings went through ``transform``, re-hashed (a
    bundle built on a CPU whose int8 kernels compute something else looks like this)."""
    shutil.copytree(src, dst)
    with np.load(dst / CHECK_FILE) as data:
        texts, emb = data["texts"], data["embeddings"]
    with (dst / CHECK_FILE).open("wb") as f:
        np.savez(f, texts=texts, embeddings=transform(emb))  # type: ignore[operator]
    manifest = orjson.loads((dst / "manifest.json").read_bytes())
    manifest["files"][CHECK_FILE] = sha256_file(dst / CHECK_FILE)
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest))
    return dst


def test_a_built_bundle_carries_its_reference_and_passes_here(built: Path):
    bundle = load_bundle(built)
    spec = (bundle.manifest.text_encoder.model_extra or {})["self_check"]
    assert spec["file"] == CHECK_FILE and spec["texts"] == 16
    assert bundle.precision == "int8" and bundle.int8_check is not None
    assert bundle.int8_check.passed and bundle.int8_check.min_cosine >= 0.98
    assert load_bundle(built, "fp32").int8_check is None  # fp32 needs no check


def test_int8_that_disagrees_falls_back_to_fp32_or_is_refused_when_asked_for(
    built: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    rng = np.random.default_rng(0)
    bad = _with_reference(built, tmp_path / "bad", lambda e: rng.standard_normal(e.shape))
    with caplog.at_level(logging.WARNING, logger="stream.models.bundle"):
        bundle = load_bundle(bad)
    assert bundle.precision == "fp32" and bundle.info["quantization"] == "fp32"
    assert bundle.int8_check is not None and not bundle.int8_check.passed
    assert "serving the fp32 encoder instead" in caplog.text
    fp32 = load_bundle(built, "fp32").encoder.encode(["bridge collapsed"]).embeddings
    np.testing.assert_allclose(bundle.encoder.encode(["bridge collapsed"]).embeddings, fp32)
    with pytest.raises(BundleError, match="disagrees with the fp32 reference"):
        load_bundle(bad, "int8")


def test_a_tampered_reference_is_refused(built: Path, tmp_path: Path):
    copy = tmp_path / "t"
    shutil.copytree(built, copy)
    with np.load(copy / CHECK_FILE) as data:
        texts, emb = data["texts"], data["embeddings"]
    with (copy / CHECK_FILE).open("wb") as f:
        np.savez(f, texts=texts, embeddings=-emb)
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)
