"""How close the int8 text encoder runs to the machine's limit, and what holds it back.

Peak: cores x multiply-adds per vector instruction x instructions per cycle x clock, read from
the CPU flags and ``/proc/cpuinfo``. The issue rates are assumptions, stated in the report:
with AVX-512 VNNI one 512-bit ``VPDPBUSD`` (64 uint8 x int8 multiply-adds) per cycle (AMD Zen 4
runs it as two 256-bit halves; Intel cores with two 512-bit ports may issue two); with AVX2
only, ``VPMADDUBSW`` + ``VPMADDWD`` + ``VPADDD`` give about 32 per cycle; fp32 is two 256-bit
FMA per cycle (16 multiply-adds) either way. The clock is the one the kernel reports (a VM's
nominal clock; boost is not visible), so the fraction of peak is an estimate.

Work: every weight MatMul's ``rows x K x N`` multiply-adds, counted from the graph's weight
shapes and the padded rows of each length-sorted batch (rows = batch x longest text); an
operation is a multiply or an add, so one multiply-add is two. Achieved: the whole encoder
(wall time of ``Session.run``) and, from onnxruntime's profile, the ``MatMulInteger`` kernels
alone. The profile's op-type table is the explanation: where the time that is not integer
matrix products goes.

    .venv/bin/python bench/roofline.py                       # the default bundle's int8 encoder
    .venv/bin/python bench/roofline.py --against OTHER.onnx  # and its speed / another encoder's
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import BUNDLE, crisis_texts, machine, table, write_result

from stream.models.text import TextEncoder, encoder_feeds, make_session, session_options
from stream.ops.cpu import available_cpus, cpu_model


def clock_ghz() -> float:
    """The clock /proc/cpuinfo reports for the first CPU (GHz; 0 when unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return 0.0


def peaks() -> tuple[float, float, str]:
    """int8 and fp32 peak operations per second of this machine, and how they were read."""
    model, flags = cpu_model()
    cores, ghz = physical_cores(), clock_ghz()
    if "avx512_vnni" in flags:
        macs, how = 64, "AVX-512 VNNI: one 512-bit VPDPBUSD (64 int8 multiply-adds) per cycle"
    elif "avx_vnni" in flags:
        macs, how = 64, "AVX-VNNI: two 256-bit VPDPBUSD (32 int8 multiply-adds each) per cycle"
    elif "avx2" in flags:
        macs, how = 32, "AVX2 without VNNI: VPMADDUBSW + VPMADDWD + VPADDD, ~32 multiply-adds"
    else:
        macs, how = 8, "no AVX2: SSE4.1 path, ~8 multiply-adds"
    int8 = cores * macs * 2 * ghz * 1e9
    fp32 = cores * 16 * 2 * ghz * 1e9
    note = (
        f"{model}, {cores} cores at {ghz:.2f} GHz (reported); int8: {how} per core; "
        "fp32: two 256-bit FMA (16 multiply-adds) per cycle per core"
    )
    return int8, fp32, note


INT8_OPS = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
ATTENTION_OPS = {"FusedMatMul", "MatMul", "Softmax", "Transpose", "Where", "And", "Equal"}
GROUPS = (
    "int8 matrix products",
    "row quantization and dequantization (nodes the per-token rewrite added)",
    "fp32 attention (scores, softmax, weighted values, head transposes)",
    "other fp32 (bias and residual Add, GELU, LayerNorm, embeddings)",
)


def group_of(node: str, op: str) -> str:
    """Which of :data:`GROUPS` a profiled kernel belongs to, by its node name and op type:
    :mod:`stream.build.rowwise` names every node it adds ``rw/...``."""
    if op in INT8_OPS:
        return GROUPS[0]
    if node.startswith("rw/"):
        return GROUPS[1]
    return GROUPS[2] if op in ATTENTION_OPS else GROUPS[3]


def physical_cores() -> int:
    """CPUs this process may run on, SMT siblings counted once."""
    cpus = available_cpus()
    try:
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
        per_core = len(siblings.strip().replace("-", ",").split(","))
    except OSError:
        per_core = 1
    return max(1, cpus // per_core)


def weight_macs(path: Path) -> int:
    """Multiply-adds per row (token) of every integer MatMul with a constant weight (fp32
    MatMuls the build left unquantized are not int8 work and are not counted)."""
    import onnx

    graph = onnx.load(str(path)).graph
    dims = {i.name: list(i.dims) for i in graph.initializer}
    total = 0
    for node in graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in dims:
            k, n = dims[node.input[1]][-2:]
            total += k * n
    return total


def tokens_per_tweet(tokenizer: Path, texts: list[str]) -> tuple[float, float]:
    """Mean tokens per tweet with the bundle's tokenizer, and with its link-dropping step
    (:func:`stream.build.export.write_tokenizer`) taken out: what the same encoder would read
    with every link kept."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.read_text())
    norm = spec.get("normalizer") or {}
    if norm.get("type") == "Sequence" and norm["normalizers"][0].get("type") == "Replace":
        rest = norm["normalizers"][1:]
        spec["normalizer"] = (
            rest[0] if len(rest) == 1 else {"type": "Sequence", "normalizers": rest}
        )
    pair = (Tokenizer.from_file(str(tokenizer)), Tokenizer.from_str(json.dumps(spec)))
    for t in pair:
        t.enable_truncation(128)
        t.no_padding()
    counts = [float(np.mean([len(e.ids) for e in t.encode_batch(texts)])) for t in pair]
    return counts[0], counts[1]


def batches(enc: TextEncoder, texts: list[str], size: int) -> list[dict[str, np.ndarray]]:
    encs = enc.tokenize(texts)
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
    groups = [[encs[i] for i in order[s : s + size]] for s in range(0, len(order), size)]
    return [encoder_feeds(g, enc.input_names) for g in groups]


def encoder_rate(session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> float:
    t0 = time.perf_counter()
    for f in feeds:
        session.run(None, f)
    return sum(len(f["input_ids"]) for f in feeds) / (time.perf_counter() - t0)


def profile(
    path: Path, feeds: list[dict[str, np.ndarray]], work: Path
) -> dict[tuple[str, str], float]:
    """Kernel seconds per (group, op type) over one pass of ``feeds`` (after a warm-up pass)."""
    opts = session_options()  # the encoder's own settings, with the profiler on
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / "profile")
    s = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    for _ in range(2):  # a warm-up pass, then the counted one
        for f in feeds:
            s.run(None, f)
    events = sorted(json.loads(Path(s.end_profiling()).read_text()), key=lambda e: e["ts"])
    runs = [e["ts"] for e in events if e.get("name") == "model_run"]
    # onnxruntime drops events past its cap (1,000,000) with only a log line
    assert len(runs) == 2 * len(feeds), f"profile truncated: {len(runs)} runs recorded"
    start = runs[len(feeds)]  # the first run of the counted pass
    events = [e for e in events if e["ts"] >= start]
    per: collections.Counter[tuple[str, str]] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            per[group_of(e["name"].removesuffix("_kernel_time"), op), op] += e["dur"] / 1e6
    return dict(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=BUNDLE)
    ap.add_argument("--texts", type=int, default=640, help="CrisisMMD dev tweets")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--against", type=Path, help="another int8 encoder (same tokenizer)")
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()

    int8_path = args.bundle / "text_encoder.int8.onnx"
    enc = TextEncoder(int8_path, args.bundle / "tokenizer.json", batch_size=args.batch)
    texts = crisis_texts(("dev",))[: args.texts]
    feeds = batches(enc, texts, args.batch)
    rows = sum(int(np.prod(f["input_ids"].shape)) for f in feeds)
    real = sum(int(f["attention_mask"].sum()) for f in feeds)
    macs = weight_macs(int8_path)
    ops = 2 * macs * rows  # one pass over the texts
    peak8, peak32, how = peaks()
    dropped, kept = tokens_per_tweet(args.bundle / "tokenizer.json", crisis_texts())

    sessions = {"int8 encoder": enc.session}
    if args.against:
        sessions["--against"] = make_session(args.against)
    per: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        encoder_rate(s, feeds)
    for _ in range(args.rounds):
        for name, s in sessions.items():
            per[name].append(encoder_rate(s, feeds))
    texts_s = statistics.median(per["int8 encoder"])
    achieved = ops * texts_s / len(texts)

    with tempfile.TemporaryDirectory() as work:
        prof = profile(int8_path, feeds, Path(work))
    total = sum(prof.values())
    groups = {g: sum(t for (gg, _), t in prof.items() if gg == g) for g in GROUPS}
    kernel = ops / groups[GROUPS[0]] if groups[GROUPS[0]] else float("nan")

    lines = [
        machine(),
        f"peak: int8 {peak8 / 1e9:.0f} G op/s, fp32 {peak32 / 1e9:.0f} G flop/s ({how})",
        f"{len(texts)} CrisisMMD dev tweets, batch {args.batch}, length-sorted: "
        f"{real / len(texts):.1f} tokens per tweet, {rows / len(texts):.1f} with padding; "
        f"{macs / 1e6:.1f} M weight multiply-adds per token "
        f"({ops / len(texts) / 1e9:.2f} G int8 op per tweet)",
        f"tokens per tweet, every CrisisMMD tweet: {dropped:.1f} as the bundle reads them "
        f"(links dropped), {kept:.1f} with links kept",
        "",
        table(
            ["what", "value", "fraction of int8 peak"],
            [
                ["encoder, texts/s (median of rounds)", texts_s, "-"],
                ["encoder, int8 G op/s (weight MatMuls only)", achieved / 1e9, achieved / peak8],
                [
                    "integer MatMul kernels alone, G op/s (profile)",
                    kernel / 1e9,
                    kernel / peak8,
                ],
            ],
        ),
    ]
    if args.against:
        ratio = statistics.median(
            a / b for a, b in zip(per["int8 encoder"], per["--against"], strict=True)
        )
        lines += [
            "",
            f"int8 encoder / {args.against}: {ratio:.3f} (median of {args.rounds} rounds)",
        ]
    lines += [
        "",
        "where the time goes (onnxruntime profile, one pass):",
        table(["what", "share of kernel time"], [[g, t / total] for g, t in groups.items()]),
        "",
        "op types over 1 %, by group:",
        table(
            ["group", "op type", "share of kernel time"],
            [
                [g.split(" (")[0], op, t / total]
                for (g, op), t in sorted(prof.items(), key=lambda kv: -kv[1])
                if t / total > 0.01
            ],
        ),
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        write_result(args.out, report)


if __name__ == "__main__":
    main()
