"""``crisis-stream broker`` stopped the way a process manager stops it (SIGTERM) or from a
terminal (SIGINT) takes its broker with it: the port is free and no process of the broker's
group survives."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.local.broker import _port_open, free_port

from .conftest import REPO


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":  # pgrp; zombies hold nothing
            members.append(int(entry.name))
    return members


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_broker_and_its_whole_process_group(tmp_path: Path, sig: int):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream",
            "broker",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    groups: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while not _port_open(port):
            assert cli.poll() is None, cli.stdout.read() if cli.stdout else ""
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.2)
        groups |= {os.getpgid(c) for c in _children(cli.pid)}
        assert groups, "the broker runs as a child of the command"
        members = [m for g in groups for m in _group_members(g)]
        assert members
        cli.send_signal(sig)
        assert cli.wait(30) is not None
        deadline = time.monotonic() + 10
        while (_port_open(port) or any(_group_members(g) for g in groups)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert not _port_open(port), "the port is still held"
        survivors = [m for g in groups for m in _group_members(g)]
        assert not survivors, f"broker processes survived: {survivors}"
    finally:  # clean up what this test started, whatever the outcome
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        for g in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(g, signal.SIGKILL)
