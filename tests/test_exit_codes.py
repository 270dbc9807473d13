"""Exit codes of ``crisis-stream``, one per cause (stream/cli/exits.py), as a supervisor sees them:
the real command line in a child process, its stderr one ``error:`` line, never a traceback.
(6, a failed backtest gate, is checked in tests/test_backtest.py with a real replay.)"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from stream.cli.exits import EPILOG, ExitCode
from tests.conftest import REPO


def _run(*args: str, module: str = "stream", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRISIS_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _error_line(run: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in run.stderr, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1, run.stderr
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ok_and_usage():
    assert _run("config").returncode == ExitCode.OK == 0
    run = _run("config", "--nope")
    assert run.returncode == ExitCode.USAGE == 2 and "No such option" in run.stderr


def test_an_invalid_setting_exits_3_naming_the_variable():
    run = _run("config", CRISIS_BATCH_MAX_EVENTS="abc")
    assert run.returncode == ExitCode.CONFIG == 3
    assert _error_line(run).startswith(
        "error: CRISIS_BATCH_MAX_EVENTS: input should be a valid integer"
    )
    # the worker stops before loading anything, the aggregator before faust starts
    run = _run("run", CRISIS_LOG_LEVEL="verbose", CRISIS_BATCH_MAX_EVENT="64")
    assert run.returncode == 3
    assert _error_line(run) == (
        "error: CRISIS_LOG_LEVEL: input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"
    )
    assert (
        "warning: CRISIS_BATCH_MAX_EVENT is not a setting (did you mean "
        "CRISIS_BATCH_MAX_EVENTS?)" in run.stderr
    )
    run = _run(module="stream.aggregate", CRISIS_SECURITY_PROTOCOL="TLS")
    assert run.returncode == 3
    assert _error_line(run).startswith("error: CRISIS_SECURITY_PROTOCOL: input should be")


def test_a_missing_bundle_exits_4(tmp_path: Path):
    run = _run("models", "verify", str(tmp_path))
    assert run.returncode == ExitCode.BUNDLE == 4
    assert _error_line(run).startswith(f"error: no model bundle at {tmp_path}")


def test_an_unreachable_broker_exits_5(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"id": "1", "text": "flood"}\n')
    bootstrap = f"127.0.0.1:{_closed_port()}"
    run = _run("produce", str(events), "--bootstrap", bootstrap, "--timeout", "1")
    assert run.returncode == ExitCode.BROKER == 5
    assert _error_line(run).startswith(
        f"error: 1 of 1 records not delivered to crisis.events.raw at {bootstrap} within 1s"
    )


def test_an_unexpected_error_exits_1_with_its_traceback(tmp_path: Path):
    (tmp_path / "file").write_text("")
    run = _run("schema", "--out", str(tmp_path / "file" / "dir"))
    assert run.returncode == ExitCode.RUNTIME == 1 and "Traceback" in run.stderr


def test_exit_codes_are_distinct_and_documented():
    codes = {c.name: int(c) for c in ExitCode}
    assert sorted(codes.values()) == list(range(7))
    help_text = _run("--help").stdout
    assert " ".join(EPILOG.split()) in " ".join(help_text.split())
    ops = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `(\d)` \| (\w+) \|", ops, re.MULTILINE))
    assert table == {str(v): k for k, v in codes.items()}, table
