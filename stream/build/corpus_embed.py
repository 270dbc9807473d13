"""Build time: embeddings of many texts by one encoder, cached on disk.

Why: ``models crossval`` and ``models build`` both embed the whole corpus (about 40,000
messages, minutes on two cores) with the same encoder; re-running either with the same encoder
file and texts reads the cached matrix instead. The key is the sha256 of the ONNX file, the
tokenizer and the texts, so a changed encoder never reuses stale rows. Files live under
``$XDG_CACHE_HOME/crisis-stream/embeddings`` and are written atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from stream.build.export import embed
from stream.build.weights_dir import cache_root
from stream.models.function_words import FunctionWords
from stream.models.manifest import sha256_file

__all__ = ["cached_embed"]


#: bump when :func:`stream.build.export.embed` changes what it computes (length, pooling)
EMBED_VERSION = "1:max_length=128:mean:l2"


def _key(onnx: Path, tokenizer: Path, texts: Sequence[str], skip: FunctionWords | None) -> str:
    h = hashlib.sha256(EMBED_VERSION.encode())
    if skip is not None:  # content pooling: the key names the skipped words
        h.update(("mean_content:" + "\x00".join(sorted(skip.words))).encode())
    h.update(sha256_file(onnx).encode())
    h.update(sha256_file(tokenizer).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def cached_embed(
    onnx: Path,
    tokenizer: Path,
    texts: Sequence[str],
    progress: Callable[[str], None],
    skip: FunctionWords | None = None,
) -> np.ndarray:
    """Pooled, normalised embeddings of ``texts`` (:func:`stream.build.export.embed`; ``skip``:
    content pooling's function words), read from the cache when this encoder already embedded
    exactly these texts with the same pooling."""
    folder = cache_root() / "embeddings"
    path = folder / f"{_key(onnx, tokenizer, texts, skip)}.npy"
    if path.is_file():
        progress(f"embeddings of {len(texts)} texts read from {path}")
        cached: np.ndarray = np.load(path)
        return cached
    progress(f"embedding {len(texts)} texts with {onnx.name}")
    out = embed(onnx, tokenizer, list(texts), skip=skip)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, out)
    os.replace(tmp, path)
    return out
