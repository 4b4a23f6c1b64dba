"""The consumer's HTTP endpoints: /healthz, /readyz and /metrics, on a daemon thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ecst.consumer.metrics import CONTENT_TYPE, Metrics


class StatusServer:
    """Serves liveness (the poll loop is turning), readiness and metrics."""

    def __init__(self, host: str, port: int, *, healthy: Callable[[], bool],
                 not_ready: Callable[[], str | None], metrics: Metrics) -> None:
        """`not_ready()` says why the service is not ready, or None when it is; binding the
        address may raise OSError (in use, not allowed)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/healthz":
                    ok = outer.healthy()
                    self._send(200 if ok else 503, "ok\n" if ok else "consumer loop stalled\n")
                elif self.path == "/readyz":
                    why = outer.not_ready()
                    self._send(503 if why else 200, f"not ready: {why}\n" if why else "ready\n")
                elif self.path == "/metrics":
                    self._send(200, outer.metrics.render(), CONTENT_TYPE)
                else:
                    self._send(404, "try /healthz, /readyz or /metrics\n")

            def _send(self, code: int, body: str, ctype: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.healthy = healthy
        self.not_ready = not_ready
        self.metrics = metrics
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="ecst-http", daemon=True)

    def start(self) -> StatusServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
