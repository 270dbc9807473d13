"""The CPUs a container may use: its cgroup's CFS quota.

onnxruntime sizes its intra-op pool from the machine's cores, not from the container's CPU
limit: on a 32-core node a worker limited to 2 CPUs would start 32 threads and spend its quota
in a fraction of each period, then sit throttled for the rest. When ``CRISIS_THREADS`` is unset
the worker uses the quota instead, rounded up (as Kubernetes rounds ``limits.cpu`` for a
``resourceFieldRef``), capped at the CPUs it may be scheduled on.

cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) in the process's own
cgroup and every ancestor (the tightest wins); v1: ``cpu.cfs_quota_us`` (-1: none) over
``cpu.cfs_period_us`` in the ``cpu`` controller's mount.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from pathlib import Path, PurePosixPath

__all__ = ["available_cpus", "cpu_model", "cpu_quota", "quota_threads", "threads_from_cgroup"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
_V1_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu", ".")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeError):
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v2_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """The process's cgroup v2 directory and its ancestors up to ``root``."""
    own = PurePosixPath("/")
    for line in (_read(proc_cgroup) or "").splitlines():
        if line.startswith("0::"):
            own = PurePosixPath(line[3:] or "/")
    rel = own.relative_to("/")
    return [root / p for p in (rel, *rel.parents)]


def _v2_quota(root: Path, proc_cgroup: Path) -> float | None:
    quotas = []
    for d in _v2_dirs(root, proc_cgroup):
        quota, _, period = (_read(d / "cpu.max") or "max").partition(" ")
        q = _ratio(quota, period or "100000") if quota != "max" else None
        if q is not None:
            quotas.append(q)
    return min(quotas, default=None)


def _v1_quota(root: Path) -> float | None:
    for name in _V1_DIRS:
        d = root / name
        quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _ratio(quota, period)
    return None


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs per period the cgroup quota allows (1.5 = one and a half); None when there is no
    quota or no cgroup file to read."""
    if (root / "cgroup.controllers").exists():  # the unified (v2) hierarchy
        return _v2_quota(root, proc_cgroup)
    return _v1_quota(root)


def available_cpus() -> int:
    """CPUs this process may be scheduled on (its affinity mask, else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - not Linux


def quota_threads(quota: float | None, cpus: int) -> int | None:
    """Intra-op threads for a quota: rounded up, at least 1, at most ``cpus``; None without
    a quota (onnxruntime's own choice)."""
    if quota is None:
        return None
    return max(1, min(cpus, math.ceil(round(quota, 6))))


def threads_from_cgroup(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    return quota_threads(cpu_quota(root, proc_cgroup), available_cpus())


def cpu_model() -> tuple[str, set[str]]:
    """The CPU's model name and flags (``/proc/cpuinfo``): int8 kernels, hence every int8
    figure, differ by instruction set (AVX2 vs AVX-512 VNNI / AMX)."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return model, flags
