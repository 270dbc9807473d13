"""HTTP endpoints for operators: ``/metrics`` (Prometheus), ``/healthz`` (the loop is alive),
``/readyz`` (partitions assigned and models loaded). A daemon thread; stdlib only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from stream.ops.prometheus import WorkerMetrics

__all__ = ["HealthServer"]


class HealthServer:
    """Serve the endpoints on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        ready: Callable[[], tuple[bool, str]],
        heartbeat: Callable[[], float],
        port: int,
        host: str = "0.0.0.0",
        stale_after_s: float = 60.0,
    ) -> None:
        outer = self
        metrics.watch_readiness(ready)  # crisis_worker_ready: the same answer as /readyz

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, metrics.render(), "text/plain; version=0.0.4")
                elif path == "/healthz":
                    age = time.monotonic() - heartbeat()
                    ok = age < outer.stale_after_s
                    self._send(200 if ok else 503, f"{'ok' if ok else 'stale'} {age:.1f}s\n")
                elif path == "/readyz":
                    ok, why = ready()
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

        self.stale_after_s = stale_after_s
        self._server = ThreadingHTTPServer((host, port), Handler)
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
