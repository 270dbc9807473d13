"""Model bundles: a directory with ``manifest.json`` and the files it lists with sha256.

A bundle is refused as a whole when any listed file is missing or its hash differs, so a
worker never serves a half-copied or tampered model.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream.errors import BundleError, BundleIntegrityError
from stream.models.function_words import FunctionWords
from stream.models.heads import LinearHead
from stream.models.image import ImageModel
from stream.models.lexicon import Analysis, Lexicon, analyse_all
from stream.models.manifest import (
    HeadSpec,
    ImageEncoderSpec,
    Manifest,
    TextEncoderSpec,
    read_manifest,
    sha256_file,
    verify_files,
)
from stream.models.selfcheck import SelfCheck, run_check
from stream.models.text import TextEncoder

log = logging.getLogger(__name__)

__all__ = [
    "Bundle",
    "HeadSpec",
    "ImageEncoderSpec",
    "Manifest",
    "TextEncoderSpec",
    "load_bundle",
    "pool_skip",
    "read_manifest",
    "sha256_file",
    "verify_files",
]


@dataclass
class Bundle:
    """A loaded, verified bundle: the text encoder and one head per task."""

    path: Path
    manifest: Manifest
    precision: str
    encoder: TextEncoder
    heads: list[LinearHead]
    sha256: str
    image: ImageModel | None = None
    lexicon: Lexicon | None = None
    int8_check: SelfCheck | None = None  # the load-time int8 vs fp32 check, when one ran

    def analyse(self, texts: list[str]) -> list[Analysis] | None:
        """The texts' lexical features when any head is hybrid (one analysis for all heads)."""
        return analyse_all(self.lexicon, texts)

    @property
    def labels(self) -> dict[str, list[str]]:
        """Each task's labels (what per-label route topics are named from)."""
        return {h.task: list(h.labels) for h in self.heads}

    @property
    def info(self) -> dict[str, Any]:
        """The ``model`` block every output event carries."""
        return {
            "bundle": self.manifest.name,
            "version": self.manifest.version,
            "sha256": self.sha256,
            "quantization": self.precision,
        }


def _self_check(spec: TextEncoderSpec, prec: str) -> dict[str, Any] | None:
    """The int8 self-check the manifest asks for, when the int8 encoder is served."""
    check = (spec.model_extra or {}).get("self_check")
    return check if check and prec == "int8" else None


def pool_skip(bundle_dir: Path, spec: TextEncoderSpec) -> FunctionWords | None:
    """The words the bundle's content pooling skips (its own copy), or None: plain mean."""
    if spec.pooling != "mean_content" or spec.function_words is None:
        return None
    return FunctionWords.load(bundle_dir / spec.function_words)


def _needed_files(
    bundle_dir: Path, manifest: Manifest, prec: str, precision: str | None
) -> tuple[set[str], str]:
    """The files serving needs at text precision ``prec``, and the image encoder's precision."""
    spec = manifest.text_encoder
    needed = {spec.files[prec], spec.tokenizer, *(h.file for h in manifest.heads)}
    if spec.pooling == "mean_content":
        if spec.function_words is None:
            raise BundleError(f"bundle {bundle_dir}: content pooling but no function-word file")
        needed.add(spec.function_words)
    hybrid = [h.task for h in manifest.heads if h.lexical]
    check = _self_check(spec, prec)
    if check:
        needed.add(check["file"])
    if hybrid:
        if manifest.lexicon is None:
            raise BundleError(f"bundle {bundle_dir}: hybrid heads {hybrid} but no lexicon file")
        needed.add(manifest.lexicon)
    ispec, iprec = manifest.image_encoder, ""
    if ispec is not None:  # optional image side: same integrity rules
        iprec = precision if precision in ispec.files else ispec.precision
        if iprec not in ispec.files:
            raise BundleError(f"bundle {bundle_dir} has no {iprec} image encoder")
        needed |= {ispec.files[iprec], ispec.concepts, *(h.file for h in ispec.heads)}
    return needed, iprec


def _verify_needed(bundle_dir: Path, manifest: Manifest, needed: set[str]) -> None:
    unlisted = needed - set(manifest.files)
    if unlisted:
        raise BundleIntegrityError(f"bundle {bundle_dir}: files without a hash: {sorted(unlisted)}")
    verify_files(bundle_dir, manifest, needed)


def _checked_encoder(
    bundle_dir: Path,
    manifest: Manifest,
    prec: str,
    precision: str | None,
    text_encoder: Callable[[str], TextEncoder],
) -> tuple[TextEncoder, str, SelfCheck | None]:
    """The text encoder, its precision and the int8 self-check's result when one ran.

    An int8 encoder that fails the check is replaced by the fp32 one, unless int8 was asked
    for or the bundle has no fp32 encoder.
    """
    spec = manifest.text_encoder
    encoder = text_encoder(prec)
    check = _self_check(spec, prec)
    if not check:
        return encoder, prec, None
    checked = run_check(encoder, bundle_dir / check["file"], float(check["bar"]))
    if checked.passed:
        return encoder, prec, checked
    why = (
        f"bundle {bundle_dir}: its int8 text encoder disagrees with the fp32 reference on "
        f"this CPU (min cosine {checked.min_cosine} < {checked.bar}; int8 kernels differ "
        "by instruction set)"
    )
    if precision == "int8" or "fp32" not in spec.files:
        raise BundleError(f"{why}; serve fp32 or rebuild the bundle on this CPU kind")
    log.warning("%s: serving the fp32 encoder instead", why)
    prec = "fp32"
    if spec.files[prec] not in manifest.files:
        raise BundleIntegrityError(f"bundle {bundle_dir}: {spec.files[prec]} has no hash")
    verify_files(bundle_dir, manifest, {spec.files[prec]})
    return text_encoder(prec), prec, checked


def _heads(bundle_dir: Path, manifest: Manifest, lexicon: Lexicon | None) -> list[LinearHead]:
    return [
        LinearHead.from_npz(
            bundle_dir / h.file,
            h.task,
            h.labels,
            h.temperature,
            h.review_threshold,
            lexicon if h.lexical else None,
        )
        for h in manifest.heads
    ]


def load_bundle(
    bundle_dir: Path,
    precision: str | None = None,
    threads: int | None = None,
    batch_size: int = 32,
    spinning: bool = False,
    cache_size: int = 0,
) -> Bundle:
    """Load and verify a bundle; ``precision`` overrides the manifest's default encoder file.

    A link to a bundle (the adaptation service's ``current``) is resolved once, first: every
    file is then read from the same version even if the link moves during the load."""
    bundle_dir = Path(bundle_dir).resolve()
    manifest = read_manifest(bundle_dir)
    spec = manifest.text_encoder
    prec = precision or spec.precision
    if prec not in spec.files:
        raise BundleError(
            f"bundle {bundle_dir} has no {prec} text encoder (has {list(spec.files)})"
        )
    needed, iprec = _needed_files(bundle_dir, manifest, prec, precision)
    _verify_needed(bundle_dir, manifest, needed)
    skip = pool_skip(bundle_dir, spec)

    def text_encoder(prec: str) -> TextEncoder:
        return TextEncoder(
            bundle_dir / spec.files[prec],
            bundle_dir / spec.tokenizer,
            spec.max_length,
            threads,
            batch_size,
            spinning,
            cache_size,
            skip,
        )

    encoder, prec, checked = _checked_encoder(bundle_dir, manifest, prec, precision, text_encoder)
    hybrid = any(h.lexical for h in manifest.heads)
    lexicon = Lexicon.load(bundle_dir / manifest.lexicon) if hybrid and manifest.lexicon else None
    heads = _heads(bundle_dir, manifest, lexicon)
    image = None
    if manifest.image_encoder is not None:
        image = ImageModel.load(bundle_dir, manifest.image_encoder, iprec, threads, batch_size)
    digest = hashlib.sha256(orjson.dumps(manifest.files, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Bundle(bundle_dir, manifest, prec, encoder, heads, digest, image, lexicon, checked)
