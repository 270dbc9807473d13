"""Intra-op threads from the cgroup CPU quota, over fake cgroup trees (v2 and v1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.ops.cpu import available_cpus, cpu_quota, quota_threads, threads_from_cgroup
from stream.runtime import intra_op_threads
from stream.settings import Settings


def v2(tmp_path: Path, files: dict[str, str], own: str = "/") -> tuple[Path, Path]:
    """A unified hierarchy under ``tmp_path/cg`` (``files``: relative path -> cpu.max) and a
    /proc/self/cgroup naming ``own``."""
    root = tmp_path / "cg"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for rel, text in files.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(text + "\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def v1(tmp_path: Path, quota: str, period: str = "100000", mount: str = "cpu,cpuacct") -> Path:
    root = tmp_path / "cg"
    d = root / mount
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text(quota + "\n")
    (d / "cpu.cfs_period_us").write_text(period + "\n")
    return root


@pytest.mark.parametrize(
    ("cpu_max", "quota"),
    [("200000 100000", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5), ("max 100000", None)],
)
def test_v2_namespaced_container(tmp_path: Path, cpu_max: str, quota: float | None):
    root, proc = v2(tmp_path, {".": cpu_max})
    assert cpu_quota(root, proc) == quota


def test_v2_tightest_ancestor_wins(tmp_path: Path):
    """Without a cgroup namespace the process sits deep in the tree; a parent slice's quota
    binds it as much as its own."""
    root, proc = v2(
        tmp_path,
        {"kubepods.slice": "300000 100000", "kubepods.slice/pod1/ctr": "max 100000"},
        own="/kubepods.slice/pod1/ctr",
    )
    assert cpu_quota(root, proc) == 3.0
    root2, proc2 = v2(
        tmp_path / "b",
        {"a": "400000 100000", "a/b": "100000 50000"},
        own="/a/b",
    )
    assert cpu_quota(root2, proc2) == 2.0


def test_v2_without_cpu_max_or_proc_file(tmp_path: Path):
    root, _ = v2(tmp_path, {})
    assert cpu_quota(root, tmp_path / "missing") is None


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
def test_v1_quota(tmp_path: Path, mount: str):
    assert cpu_quota(v1(tmp_path, "250000", mount=mount), tmp_path / "missing") == 2.5


def test_v1_unlimited_and_garbage(tmp_path: Path):
    assert cpu_quota(v1(tmp_path / "a", "-1"), tmp_path / "x") is None
    assert cpu_quota(v1(tmp_path / "b", "lots"), tmp_path / "x") is None
    assert cpu_quota(v1(tmp_path / "c", "100000", period="0"), tmp_path / "x") is None
    assert cpu_quota(tmp_path / "nothing", tmp_path / "x") is None


@pytest.mark.parametrize(
    ("quota", "cpus", "threads"),
    [(None, 8, None), (0.5, 8, 1), (1.0, 8, 1), (1.5, 8, 2), (2.0, 8, 2), (6.0, 4, 4)],
)
def test_quota_threads_round_up_within_the_cpus(quota: float | None, cpus: int, threads: int):
    """Rounded up like Kubernetes' resourceFieldRef of limits.cpu (divisor 1), so both ways of
    setting CRISIS_THREADS agree; never more threads than schedulable CPUs."""
    assert quota_threads(quota, cpus) == threads


def test_threads_from_cgroup_uses_the_files(tmp_path: Path):
    root, proc = v2(tmp_path, {".": "100000 100000"})
    assert threads_from_cgroup(root, proc) == 1
    assert available_cpus() >= 1


def test_setting_wins_over_the_quota():
    assert intra_op_threads(Settings(threads=3)) == 3
