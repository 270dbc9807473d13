"""HTTP endpoints for operators: ``/metrics`` (Prometheus), ``/healthz`` (the loop is alive),
``/readyz`` (partitions assigned and models loaded). A daemon thread; stdlib only.

Each connection is served on its own thread and may last at most ``request_timeout_s`` from
accept to the last byte of the answer: a client that connects and sends nothing, or trickles
its request a byte at a time, is disconnected then, and never delays another client's probe.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from stream.ops.prometheus import WorkerMetrics

__all__ = ["HealthServer"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: HealthServer) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that went away or ran out of time: nothing to report
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        limit = self.server.owner.request_timeout_s
        self.connection.settimeout(limit)  # each socket read and write...
        # ...and the whole request: a trickling client passes every per-read timeout
        self._expiry = threading.Timer(limit, self._expire)
        self._expiry.daemon = True
        self._expiry.start()

    def _expire(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once

    def finish(self) -> None:
        self._expiry.cancel()
        super().finish()

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?")[0]
        if path == "/metrics":
            self._send(200, owner.metrics.render(), "text/plain; version=0.0.4")
        elif path == "/healthz":
            age = time.monotonic() - owner.heartbeat()
            ok = age < owner.stale_after_s
            self._send(200 if ok else 503, f"{'ok' if ok else 'stale'} {age:.1f}s\n")
        elif path == "/readyz":
            ok, why = owner.ready()
            self._send(200 if ok else 503, f"{'ready' if ok else 'not ready'}: {why}\n")
        else:
            self._send(404, "not found\n")

    def _send(self, code: int, body: bytes | str, ctype: str = "text/plain") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HealthServer:
    """Serve the endpoints on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        ready: Callable[[], tuple[bool, str]],
        heartbeat: Callable[[], float],
        port: int,
        host: str = "127.0.0.1",
        stale_after_s: float = 60.0,
        request_timeout_s: float = 5.0,
    ) -> None:
        metrics.watch_readiness(ready)  # crisis_worker_ready: the same answer as /readyz
        self.metrics = metrics
        self.ready = ready
        self.heartbeat = heartbeat
        self.stale_after_s = stale_after_s
        self.request_timeout_s = request_timeout_s
        self._server = _Server((host, port), self)
        self.host = str(self._server.server_address[0])
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="health-http"
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
