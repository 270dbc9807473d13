"""The int8 encoder checks itself against fp32 reference embeddings when a bundle is loaded.

Dynamic int8 runs on CPU-specific kernels: on CPUs without VNNI (AVX2 only) onnxruntime's
u8 x s8 kernel sums pairs of products in int16 and can saturate. A quantization that passed the
build's cosine bar on one CPU kind can be broken on another (all-mpnet-base-v2's plain
per-channel int8 gave min cosine -0.36 vs fp32 on an AVX2-only EPYC). So the build stores the
fp32 embeddings of a few fixed texts beside the encoder, and the worker re-encodes them with the
int8 file it is about to serve: below the bar it falls back to the fp32 file (or refuses, when
int8 was asked for explicitly) instead of serving wrong labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.models.numeric import cosine_stats
from stream.models.text import TextEncoder

__all__ = ["CHECK_FILE", "SelfCheck", "run_check", "write_reference"]

CHECK_FILE = "text_check.npz"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelfCheck:
    """Outcome of one load-time check."""

    min_cosine: float
    bar: float
    texts: int

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.bar


def write_reference(dst: Path, texts: Sequence[str], embeddings: np.ndarray) -> None:
    """Store ``texts`` and their fp32 embeddings (as the runtime computes them) in ``dst``."""
    with dst.open("wb") as f:
        np.savez(f, texts=np.array(list(texts)), embeddings=embeddings.astype(np.float32))


def run_check(encoder: TextEncoder, reference: Path, bar: float) -> SelfCheck:
    """Encode the reference texts with ``encoder`` (one batch, as the build's check did); the
    min cosine against the stored fp32 embeddings."""
    with np.load(reference, allow_pickle=False) as data:
        texts = [str(t) for t in data["texts"]]
        ref = data["embeddings"]
    got = encoder.encode(texts).embeddings
    return SelfCheck(cosine_stats(got, ref)["min"], bar, len(texts))
