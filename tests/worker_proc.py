"""The worker as a real child process (``python -m stream run``), configured by environment, with
its JSON logs in a file (a pipe nobody reads would fill up and block the worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream.settings import Settings

from .conftest import REPO


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        "CRISIS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "CRISIS_GROUP_ID": settings.group_id,
        "CRISIS_INPUT_TOPIC": settings.input_topic,
        "CRISIS_OUTPUT_TOPIC": settings.output_topic,
        "CRISIS_REVIEW_TOPIC": settings.review_topic or "",
        "CRISIS_DLQ_TOPIC": settings.dlq_topic,
        "CRISIS_BUNDLE": str(settings.bundle),
        "CRISIS_SESSION_TIMEOUT_MS": "6000",
        "CRISIS_HEARTBEAT_INTERVAL_MS": "1000",
        "CRISIS_COMMIT_INTERVAL_MS": "500",
        "CRISIS_BATCH_MAX_EVENTS": "16",
        "CRISIS_RELOAD_INTERVAL_S": "0",
        # static membership: a restarted worker reclaims its partitions at once (noida never
        # expires a crashed dynamic member, see README "Brokers")
        "CRISIS_GROUP_INSTANCE_ID": "worker-0",
    }
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        full = {k: v for k, v in os.environ.items() if not k.startswith("CRISIS_")}
        full.update(env, PYTHONUNBUFFERED="1")
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream", "run"],
                cwd=REPO,
                env=full,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def wait_for_log(self, text: str, timeout_s: float = 60) -> None:
        """Block until ``text`` appears in the log (e.g. ``"starting"``: signal handling is up)."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log_path.read_text(errors="replace"):
            assert self.alive(), self.log_tail()
            assert time.monotonic() < deadline, f"no {text!r} in the log\n{self.log_tail()}"
            time.sleep(0.05)

    def terminate(self, timeout_s: float = 60) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]
