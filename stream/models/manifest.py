"""The bundle manifest: what files a bundle holds, their sha256, and how to read them.

Kept apart from :mod:`stream.models.bundle` (which loads the models) so that the model modules
can name their spec types without importing the loader.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.errors import BundleError, BundleIntegrityError

__all__ = [
    "FusionWeights",
    "HeadSpec",
    "ImageEncoderSpec",
    "Manifest",
    "TextEncoderSpec",
    "bundle_file",
    "read_manifest",
    "sha256_file",
    "verify_files",
]

Precision = Literal["int8", "fp32"]


class TextEncoderSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    files: dict[str, str]
    precision: str = "int8"
    tokenizer: str = "tokenizer.json"
    max_length: int = 128
    dim: int = 384
    #: mean_content: the mean over the tokens of words not in ``function_words`` (a file of
    #: the bundle), so function words have no share of any logit (:mod:`stream.models.text`)
    pooling: Literal["mean", "mean_content"] = "mean"
    function_words: str | None = None
    normalize: bool = True
    quantization: dict[str, Any] = Field(default_factory=dict)


class HeadSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    task: str
    kind: Literal["trained", "zero_shot", "prototype"] = "trained"
    labels: list[str]
    file: str
    temperature: float = 1.0
    review_threshold: float = 0.5
    descriptions: dict[str, str] | None = None
    lexical: bool = False  # hybrid: the head file also holds V/c over the bundle's lexicon
    metrics: dict[str, Any] = Field(default_factory=dict)


class ImageEncoderSpec(BaseModel):
    """Optional image side: ONNX encoder(s), concept space, image heads and fusion weights."""

    model_config = ConfigDict(extra="allow")
    files: dict[str, str]
    precision: str = "fp32"
    input_size: int = 224
    grid: int = 7
    concepts: str = "image_concepts.npz"
    heads: list[HeadSpec] = Field(default_factory=list)
    fusion: dict[str, dict[str, float]] = Field(default_factory=dict)


@dataclass(frozen=True)
class FusionWeights:
    """One task's late-fusion weights (the parsed form of ``ImageEncoderSpec.fusion``)."""

    text: float = 1.0
    image: float = 1.0


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: int = 1
    name: str
    version: str
    build_command: str = ""
    built_from: dict[str, Any] = Field(default_factory=dict)
    text_encoder: TextEncoderSpec
    heads: list[HeadSpec]
    files: dict[str, str]
    lexicon: str | None = None  # TF-IDF vocabulary of the hybrid heads
    image_encoder: ImageEncoderSpec | None = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_name(bundle_dir: Path, name: str) -> None:
    """Refuse a listed name that is not a plain relative path inside the bundle."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or "\x00" in name
        or "\\" in name
        or PurePosixPath(name).is_absolute()
        or ".." in parts
        or not parts
    ):
        raise BundleError(
            f"bundle {bundle_dir}: manifest lists {name!r}, not a relative path inside the bundle"
        )


def bundle_file(bundle_dir: Path, name: str) -> Path:
    """The path of a listed file, refused when it resolves outside the bundle (via a link)."""
    _check_name(bundle_dir, name)
    root = bundle_dir.resolve()
    path = bundle_dir / name
    if not path.resolve().is_relative_to(root):
        raise BundleError(f"bundle {bundle_dir}: {name} resolves outside the bundle directory")
    return path


def read_manifest(bundle_dir: Path) -> Manifest:
    path = bundle_dir / "manifest.json"
    if not path.is_file():
        raise BundleError(
            f"no model bundle at {bundle_dir} (manifest.json missing); build one with "
            "`crisis-stream models build` or `make models`"
        )
    try:
        manifest = Manifest.model_validate(orjson.loads(path.read_bytes()))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise BundleError(f"invalid manifest {path}: {exc}") from exc
    for name in manifest.files:
        _check_name(bundle_dir, name)
    return manifest


def verify_files(bundle_dir: Path, manifest: Manifest, only: set[str] | None = None) -> None:
    """Check every listed file (or those in ``only``) against its recorded sha256."""
    for name, expected in manifest.files.items():
        if only is not None and name not in only:
            continue
        path = bundle_file(bundle_dir, name)
        if not path.is_file():
            raise BundleIntegrityError(f"bundle {bundle_dir}: file {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleIntegrityError(
                f"bundle {bundle_dir}: {name} has sha256 {actual[:12]}…, manifest says "
                f"{expected[:12]}…; refusing a modified or partially copied bundle"
            )
