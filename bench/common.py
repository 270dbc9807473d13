"""Shared helpers for the benchmark scripts: CrisisMMD texts, interleaved timing, tables.

The machine is shared (2 cores, other jobs running), so no script reports an absolute time as
its result: each measures a baseline in the same process, interleaves the configurations in
rounds (so a burst of foreign load hits all of them alike) and prints ratios. Absolute numbers
are printed too, for context only.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/x.py` from the worktree root
    sys.path.insert(0, str(REPO))

from stream.data.crisismmd import find_dataset, load_split  # noqa: E402
from stream.ops.cpu import cpu_model  # noqa: E402

BUNDLE = REPO / "models" / "e5-crisis"


def crisis_texts(splits: Sequence[str] = ("train", "dev", "test")) -> list[str]:
    """Every CrisisMMD informative-task tweet text (agreed splits), in file order, with the
    dataset's own duplicates kept (retweets and copies are real traffic)."""
    data = find_dataset()
    if data is None:
        raise SystemExit(
            "CrisisMMD not found (../shared/datasets/crisismmd); set CRISIS_STREAM_DATA"
        )
    texts: list[str] = []
    for split in splits:
        texts += [r.text for r in load_split(data, "informative", split) if r.text.strip()]
    return texts


def repeat_to(texts: Sequence[str], n: int) -> list[str]:
    """``texts`` cycled to exactly ``n`` items."""
    return [texts[i % len(texts)] for i in range(n)]


def unique_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` without exact duplicates (first occurrence kept)."""
    return list(dict.fromkeys(texts))


def rate(fn: Callable[[], int], min_s: float = 0.0) -> float:
    """Items per second of ``fn`` (which returns how many items it handled)."""
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return n / dt


def interleaved(
    configs: dict[str, Callable[[], int]], rounds: int = 3, min_s: float = 1.0
) -> dict[str, float]:
    """Best items/s per configuration over ``rounds`` interleaved rounds (each run once for
    warm-up first). The best run is the one least disturbed by other processes."""
    for fn in configs.values():
        fn()
    best = dict.fromkeys(configs, 0.0)
    for _ in range(rounds):
        for name, fn in configs.items():
            best[name] = max(best[name], rate(fn, min_s))
    return best


def interleaved_ratios(
    configs: dict[str, Callable[[], int]], baseline: str, rounds: int = 5, min_s: float = 0.5
) -> tuple[dict[str, float], dict[str, float]]:
    """Median over interleaved rounds of (config items/s) / (baseline items/s in that round),
    and the median items/s per config (context only). A round's ratio compares runs seconds
    apart, so slow drift of the foreign load cancels; the median drops the bursts."""
    for fn in configs.values():
        fn()
    per: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(rounds):
        for name, fn in configs.items():
            per[name].append(rate(fn, min_s))
    ratios = {
        k: statistics.median(v / b for v, b in zip(per[k], per[baseline], strict=True))
        for k in configs
    }
    return ratios, {k: statistics.median(v) for k, v in per.items()}


def rss_mb(pid: int | None = None) -> float:
    """Resident set size in MB (from /proc)."""
    path = f"/proc/{pid or os.getpid()}/status"
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def group_cpu_s(pgid: int | None) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    if pgid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def machine() -> str:
    """One line naming the CPU (model, cores, the int8-relevant instruction sets): int8 and fp32
    kernels, hence every ratio against them, differ by instruction set."""
    model, flags = cpu_model()
    isa = {f: "yes" if f in flags else "no" for f in ("avx2", "avx512_vnni")}
    marks = ", ".join(f"{f} {v}" for f, v in isa.items())
    return f"machine: {model}, {os.cpu_count()} cores, {marks}"


def write_result(path: str, report: str) -> None:
    """Save a report with its date and the command that produced it (bench/results/README)."""
    head = f"{time.strftime('%Y-%m-%d %H:%M')}: python {' '.join(sys.argv)}"
    Path(path).write_text(f"{head}\n\n{report}\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(c) for c in r) + " |")
    return "\n".join(out)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def met(value: float, goal: float, higher: bool = True) -> str:
    ok = value >= goal if higher else value <= goal
    return "met" if ok else "NOT met"
