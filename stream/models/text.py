"""Text encoder: HF tokenizers + an ONNX transformer with token-level output.

The ONNX graph returns ``last_hidden_state``; pooling happens here in numpy so that the
exact per-token shares of a linear head's logit (the rationale) come for free. A bundle built
with content pooling (manifest ``pooling: mean_content``) averages only the tokens of words
that are not function words (:mod:`stream.models.function_words`): "in" and "the" still shape
the other tokens' states inside the transformer, but their own share of the encoder's logit is
exactly zero (the bundle's lexicon keeps them only in bigrams with a content word), so a
rationale rarely names them. A text of function words only is pooled whole.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from stream.models.cache import CachedText, EncoderCache
from stream.models.function_words import FunctionWords

__all__ = [
    "TextEncoder",
    "TextEncoding",
    "encoder_feeds",
    "make_session",
    "pad_batch",
    "session_options",
]


def session_options(threads: int | None = None, spinning: bool = False) -> ort.SessionOptions:
    """Deliberate thread and graph settings for an onnxruntime CPU session.

    Intra-op threads do not busy-wait between ops unless ``spinning``: on a shared 2-core
    machine spinning threads burn the CPU other work needs, and the int8 MiniLM ran 1.4-1.8x
    faster without it under foreign load (bench/encoder.py, bench/results/); outputs are
    unchanged (same kernels, same thread count).
    """
    opts = ort.SessionOptions()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def make_session(
    path: Path, threads: int | None = None, spinning: bool = False
) -> ort.InferenceSession:
    """An onnxruntime CPU session with :func:`session_options`."""
    opts = session_options(threads, spinning)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def pad_batch(encs: Sequence[Encoding], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 token ids and their attention mask, ``[len(encs), width]``
    (``width`` defaults to the longest encoding)."""
    if width is None:
        width = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for r, e in enumerate(encs):
        ids[r, : len(e.ids)] = e.ids
        mask[r, : len(e.ids)] = 1
    return ids, mask


def encoder_feeds(
    encs: Sequence[Encoding], input_names: Collection[str], width: int | None = None
) -> dict[str, np.ndarray]:
    """The encoder's inputs for ``encs`` (see :func:`pad_batch`); all-zero ``token_type_ids``
    when the model takes them."""
    ids, mask = pad_batch(encs, width)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


def text_offsets(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token spans without leading whitespace. SentencePiece tokenizers (XLM-R's Metaspace)
    count the space before a word into its first token's span, so every word's span would
    touch the previous one and the rationale (which joins touching spans, to keep ``#flood``
    and ``don't`` whole) would read a whole sentence as one word."""
    out = []
    for start, end in offsets:
        while start < end and text[start].isspace():
            start += 1
        out.append((start, end))
    return out


@dataclass(frozen=True)
class TextEncoding:
    """Encoder output for N texts, in input order.

    ``embeddings`` are mean-pooled and L2-normalised ([N, D]); ``tokens[i]`` is the
    token-level hidden state of text i ([T_i, D], padding removed), ``pooled[i]`` marks the
    tokens the pool averages ([T_i] bool: all of them, unless the encoder skips function words)
    and ``scale[i]`` is ``1 / (P_i * ||mean||)`` over those ``P_i`` tokens, so that
    ``embeddings[i] == tokens[i][pooled[i]].sum(0) * scale[i]``. ``offsets[i]`` are character
    spans per token and ``word_ids[i]`` the word index per token (None for special tokens).
    """

    embeddings: np.ndarray
    tokens: list[np.ndarray]
    scale: np.ndarray
    offsets: list[list[tuple[int, int]]]
    word_ids: list[list[int | None]]
    pooled: list[np.ndarray]


def pool_mask(
    text: str,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    skip: FunctionWords | None,
) -> np.ndarray:
    """The tokens a pool averages: all but those of the ``skip`` words, or all when ``skip``
    is None or the text has no other word."""
    keep = np.ones(len(word_ids), bool)
    if skip is None:
        return keep
    keep &= ~skip.token_mask(text, offsets, word_ids)
    words = np.fromiter((w is not None for w in word_ids), bool, len(word_ids))
    return keep if (keep & words).any() else np.ones(len(word_ids), bool)


class TextEncoder:
    """Encode texts with a (quantized) ONNX sentence encoder, batching sorted by length.
    ``skip``: the function words content pooling leaves out of the pool (None: plain mean)."""

    def __init__(
        self,
        onnx_path: Path,
        tokenizer_path: Path,
        max_length: int = 128,
        threads: int | None = None,
        batch_size: int = 32,
        spinning: bool = False,
        cache_size: int = 0,
        skip: FunctionWords | None = None,
    ) -> None:
        self.skip = skip
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.no_padding()
        self.session = make_session(onnx_path, threads, spinning)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.batch_size = batch_size
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.cache = EncoderCache(cache_size) if cache_size > 0 else None

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        return list(self.tokenizer.encode_batch(list(texts)))

    def encode(self, texts: Sequence[str]) -> TextEncoding:
        """Encode ``texts`` (through the exact-text cache when one is configured)."""
        if self.cache is None:
            return self._encode(texts)
        cache = self.cache
        found = [cache.get(t) for t in texts]
        todo = list(dict.fromkeys(t for t, c in zip(texts, found, strict=True) if c is None))
        if todo:
            fresh = self._encode(todo)
            new = {
                t: CachedText(
                    fresh.embeddings[j],
                    fresh.tokens[j],
                    float(fresh.scale[j]),
                    fresh.offsets[j],
                    fresh.word_ids[j],
                    fresh.pooled[j],
                )
                for j, t in enumerate(todo)
            }
            for t, c in new.items():
                cache.put(t, c)
            found = [c if c is not None else new[t] for t, c in zip(texts, found, strict=True)]
        items = [c for c in found if c is not None]
        return TextEncoding(
            embeddings=np.stack([c.embedding for c in items]).astype(np.float32, copy=False),
            tokens=[c.tokens for c in items],
            scale=np.array([c.scale for c in items], dtype=np.float32),
            offsets=[c.offsets for c in items],
            word_ids=[c.word_ids for c in items],
            pooled=[c.pooled for c in items],
        )

    def _encode(self, texts: Sequence[str]) -> TextEncoding:
        """Encode ``texts``; sorts by token length per batch to cut padding, restores order."""
        encs = self.tokenize(texts)
        n = len(encs)
        offsets = [text_offsets(t, e.offsets) for t, e in zip(texts, encs, strict=True)]
        word_ids = [list(e.word_ids) for e in encs]
        pooled = [
            pool_mask(t, o, w, self.skip) for t, o, w in zip(texts, offsets, word_ids, strict=True)
        ]
        emb = np.zeros((n, self.dim), dtype=np.float32)
        tokens: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * n
        scale = np.zeros(n, dtype=np.float32)
        order = sorted(range(n), key=lambda i: len(encs[i].ids))
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            hidden = self._run([encs[i] for i in idx])
            for row, i in enumerate(idx):
                h = hidden[row, : len(encs[i].ids)]
                mean = h.mean(axis=0) if self.skip is None else h[pooled[i]].mean(axis=0)
                norm = float(np.linalg.norm(mean)) or 1.0
                tokens[i] = h
                scale[i] = 1.0 / (int(pooled[i].sum()) * norm)
                emb[i] = mean / norm
        return TextEncoding(emb, tokens, scale, offsets, word_ids, pooled)

    def _run(self, encs: Sequence[Encoding]) -> np.ndarray:
        out = self.session.run(None, encoder_feeds(encs, self.input_names))[0]
        return np.asarray(out, dtype=np.float32)
