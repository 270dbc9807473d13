"""The test run's own safety net: a test that deadlocks in C code holding the GIL (as a
librdkafka close once did) ends the run with every thread's stack instead of hanging CI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .conftest import REPO

_HOLDS_THE_GIL = """
import ctypes


def test_waits_for_ever_holding_the_gil():
    libc = ctypes.PyDLL(None)  # PyDLL: the GIL stays held during the call
    mutex, cond = ctypes.create_string_buffer(64), ctypes.create_string_buffer(64)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_cond_wait(cond, mutex)  # no signal ends it
"""


def test_a_test_holding_the_gil_ends_the_run_with_its_stack(tmp_path: Path):
    (tmp_path / "test_stuck.py").write_text(_HOLDS_THE_GIL)
    args = ["-p", "tests.conftest", "-o", "timeout=1", "--rootdir", str(tmp_path)]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "STREAM_TEST_WATCHDOG_MARGIN_S": "2", "PYTHONPATH": str(REPO)},
    )
    assert done.returncode != 0
    assert time.monotonic() - started < 60
    assert "test_waits_for_ever_holding_the_gil" in done.stderr  # the stack, not swallowed
