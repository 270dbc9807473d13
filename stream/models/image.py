"""Image encoder runtime: EfficientNet-Lite0 in onnxruntime, micro-batched, plus the image
side of a bundle (concept space, per-task image heads, fusion weights).

The ONNX graph takes uint8 NHWC pixels and returns the 7x7x1280 feature map and the ImageNet
logits (see :mod:`stream.build.export_image`); everything downstream is numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream.models.concepts import ConceptEncoding, ConceptSpace
from stream.models.heads import LinearHead
from stream.models.manifest import FusionWeights, ImageEncoderSpec
from stream.models.text import make_session

__all__ = ["ImageEncoder", "ImageEncoding", "ImageModel"]


@dataclass(frozen=True)
class ImageEncoding:
    """``features``: [N, G*G, F] cell features (row-major cells); ``logits``: [N, 1000]."""

    features: np.ndarray
    logits: np.ndarray
    grid: int


class ImageEncoder:
    """Run the image ONNX graph over uint8 [size, size, 3] arrays in batches."""

    def __init__(self, onnx_path: Path, threads: int | None = None, batch_size: int = 16) -> None:
        self.session = make_session(onnx_path, threads)
        shape = self.session.get_inputs()[0].shape
        self.size = int(shape[1]) if isinstance(shape[1], int) else 224
        out = {o.name: o.shape for o in self.session.get_outputs()}
        self.grid = int(out["features"][1]) if isinstance(out["features"][1], int) else 7
        self.batch_size = max(1, batch_size)

    def encode(self, pixels: Sequence[np.ndarray]) -> ImageEncoding:
        feats: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        for start in range(0, len(pixels), self.batch_size):
            batch = np.stack(pixels[start : start + self.batch_size]).astype(np.uint8, copy=False)
            f, lg = self.session.run(["features", "logits"], {"pixels": batch})
            feats.append(np.asarray(f, np.float32).reshape(len(batch), -1, f.shape[-1]))
            logits.append(np.asarray(lg, np.float32))
        if not feats:
            raise ValueError("ImageEncoder.encode needs at least one image")
        return ImageEncoding(np.concatenate(feats), np.concatenate(logits), self.grid)


@dataclass
class ImageModel:
    """Everything a bundle needs to label and explain images.

    ``heads`` are linear maps on concept vectors (per task, same labels as the text head),
    already temperature-calibrated; ``fusion`` holds per-task modality weights.
    """

    encoder: ImageEncoder
    concepts: ConceptSpace
    heads: dict[str, LinearHead]
    fusion: dict[str, FusionWeights] = field(default_factory=dict)
    precision: str = "fp32"

    @classmethod
    def load(
        cls,
        bundle_dir: Path,
        spec: ImageEncoderSpec,
        precision: str,
        threads: int | None = None,
        batch_size: int = 16,
    ) -> ImageModel:
        """Build from a manifest's ``image_encoder`` section (files already verified)."""
        heads = {
            h.task: LinearHead.from_npz(
                bundle_dir / h.file, h.task, h.labels, h.temperature, h.review_threshold
            )
            for h in spec.heads
        }
        fusion = {
            task: FusionWeights(text=float(w.get("text", 1.0)), image=float(w.get("image", 1.0)))
            for task, w in spec.fusion.items()
        }
        return cls(
            ImageEncoder(bundle_dir / spec.files[precision], threads, batch_size),
            ConceptSpace.load(bundle_dir / spec.concepts),
            heads,
            fusion,
            precision,
        )

    def encode(self, pixels: Sequence[np.ndarray]) -> tuple[ImageEncoding, ConceptEncoding]:
        """Features, logits and concept vectors of one or more decoded images."""
        if not pixels:
            raise ValueError("ImageModel.encode needs at least one image")
        enc = self.encoder.encode(pixels)
        return enc, self.concepts.encode(enc.features)

    def weights(self, task: str) -> FusionWeights:
        return self.fusion.get(task, FusionWeights())
