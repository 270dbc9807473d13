"""Image concepts: ImageNet class distributions mapped into the text embedding space.

No joint image-text model can be installed here, so an image is described by what an ImageNet
classifier sees in it: per 7x7 cell, the class distribution ``softmax(W_fc . f_cell + b_fc)``
(the cell's exact CAM logits) weighted over the text embeddings of the class names ("a photo
of a lakeside"). The image's concept vector is the mean of its cells' concept vectors,
L2-normalised - the same structure as the text side's mean-pooled token states - so the text
heads apply to it unchanged and each cell's share of an image logit is exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from stream.models.numeric import softmax

__all__ = [
    "ConceptEncoding",
    "ConceptSpace",
    "embed_class_names",
    "imagenet_class_names",
    "short_name",
]

PROMPT = "a photo of a {}"


class _Embedder(Protocol):
    def encode(self, texts: list[str]) -> object: ...


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (Apache-2.0, see data/README.md)."""
    data = resources.files("stream.models").joinpath("data/imagenet_classes.json").read_bytes()
    names: list[str] = json.loads(data)
    if len(names) != 1000:
        raise ValueError(f"expected 1000 ImageNet classes, found {len(names)}")
    return names


def short_name(name: str) -> str:
    """The first synonym: 'seashore, coast, seacoast' -> 'seashore'."""
    return name.split(",")[0].strip()


def embed_class_names(encoder: _Embedder, names: list[str]) -> np.ndarray:
    """Unit-norm text embeddings of ``a photo of a <name>`` per class, shape [C, D].

    Each class is the mean of its first two synonyms' prompts (one synonym alone is often
    ambiguous, e.g. 'crane' the bird vs the machine), renormalised.
    """
    prompts: list[str] = []
    owner: list[int] = []
    for i, name in enumerate(names):
        for syn in [s.strip() for s in name.split(",") if s.strip()][:2]:
            prompts.append(PROMPT.format(syn))
            owner.append(i)
    emb = np.asarray(encoder.encode(prompts).embeddings, dtype=np.float32)  # type: ignore[attr-defined]
    out = np.zeros((len(names), emb.shape[1]), dtype=np.float32)
    np.add.at(out, np.asarray(owner), emb)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class ConceptEncoding:
    """Concept vectors for N images, shaped like a text encoding with cells as tokens.

    ``cells``: [N, G*G, D] per-cell concept vectors; ``embeddings``: [N, D], equal to
    ``cells[i].sum(0) * scale[i]`` (mean, L2-normalised); ``top_class``: [N, G*G] the most
    likely ImageNet class of each cell.
    """

    embeddings: np.ndarray
    cells: np.ndarray
    scale: np.ndarray
    top_class: np.ndarray


class ConceptSpace:
    """ImageNet classifier weights + class-name embeddings: features -> concept vectors."""

    def __init__(
        self,
        names: list[str],
        class_embeddings: np.ndarray,
        fc_weight: np.ndarray,
        fc_bias: np.ndarray,
        temperature: float = 1.0,
    ) -> None:
        if not (len(names) == class_embeddings.shape[0] == fc_weight.shape[0] == fc_bias.shape[0]):
            raise ValueError("concept space: names, embeddings and classifier disagree in size")
        self.names = names
        self.short = [short_name(n) for n in names]
        self.class_embeddings = class_embeddings.astype(np.float32)
        self.fc_weight = fc_weight.astype(np.float32)
        self.fc_bias = fc_bias.astype(np.float32)
        self.temperature = float(temperature)

    @property
    def dim(self) -> int:
        return int(self.class_embeddings.shape[1])

    def save(self, path: Path) -> None:
        np.savez(
            path,
            class_embeddings=self.class_embeddings.astype(np.float16),
            fc_weight=self.fc_weight.astype(np.float16),
            fc_bias=self.fc_bias,
            temperature=np.float32(self.temperature),
        )

    @classmethod
    def load(cls, path: Path) -> ConceptSpace:
        with np.load(path) as data:
            return cls(
                imagenet_class_names(),
                data["class_embeddings"].astype(np.float32),
                data["fc_weight"].astype(np.float32),
                data["fc_bias"].astype(np.float32),
                float(data["temperature"]),
            )

    def cell_logits(self, features: np.ndarray) -> np.ndarray:
        """Exact per-cell ImageNet logits [N, G*G, C]; their mean over cells is the logits."""
        n, dim = features.shape[0], features.shape[-1]
        flat = features.reshape(-1, dim)  # 2-D: numpy's batched 3-D matmul skips BLAS
        logits = flat @ self.fc_weight.T + self.fc_bias
        return np.asarray(logits, np.float32).reshape(n, -1, self.fc_bias.shape[0])

    def encode(self, features: np.ndarray) -> ConceptEncoding:
        """Concept vectors of N feature maps [N, G, G, F] (or [N, G*G, F])."""
        probs = softmax(self.cell_logits(features) / self.temperature)
        n, g, c = probs.shape
        cells = (probs.reshape(-1, c) @ self.class_embeddings).reshape(n, g, -1)
        mean = cells.mean(axis=1)
        norm = np.linalg.norm(mean, axis=1)
        norm[norm == 0] = 1.0
        return ConceptEncoding(
            embeddings=mean / norm[:, None],
            cells=cells,
            scale=(1.0 / (cells.shape[1] * norm)).astype(np.float32),
            top_class=probs.argmax(axis=-1),
        )
