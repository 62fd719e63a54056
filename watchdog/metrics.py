"""The instance's Prometheus metrics (of-watchdog's names plus the batch path's) and their HTTP server."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from faas_infer.promtext import CONTENT_TYPE, Registry

logger = logging.getLogger(__name__)

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WatchdogMetrics:
    """Every series one watchdog exports."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        # of-watchdog's series, same names and labels.
        self.requests = r.counter("http_requests_total", "Requests answered", ("code", "method"))
        self.duration = r.histogram("http_request_duration_seconds", "Seconds from arrival to answer",
                                    ("code", "method"), FAST_BUCKETS)
        self.in_flight = r.gauge("http_requests_in_flight", "Requests being handled")
        # The batch path.
        self.batch_size = r.histogram("faas_infer_batch_size", "Requests per handle_batch call", (),
                                      BATCH_SIZE_BUCKETS)
        self.queue_wait = r.histogram("faas_infer_queue_wait_seconds", "Seconds a request waited for its batch",
                                      (), FAST_BUCKETS)
        self.batch_exec = r.histogram("faas_infer_batch_exec_seconds", "Seconds of one handle_batch call",
                                      ("batch_size",), FAST_BUCKETS)
        self.refused = r.counter("faas_infer_requests_refused_total", "Requests refused before running",
                                 ("reason",))
        self.failed = r.counter("faas_infer_requests_failed_total", "Requests that ran and failed", ("code",))
        self.queue_depth = r.gauge("faas_infer_queue_depth", "Requests waiting in this instance's queue")
        self.cold_start = r.gauge("faas_infer_cold_start_seconds", "Seconds to import the handler and run load()")
        self.max_batch_size = r.gauge("faas_infer_max_batch_size", "Live max_batch_size")
        self.batch_timeout = r.gauge("faas_infer_batch_timeout_seconds", "Live effective batch timeout")
        self.latency_slo = r.gauge("faas_infer_latency_slo_seconds", "Live latency SLO (0 when unset)")
        self.predicted_exec = r.gauge("faas_infer_predicted_exec_seconds",
                                      "Fitted execution seconds of a full batch")
        self.redis_up = r.gauge("redis_up", "1 while the shared Redis queue is in use, 0 when degraded to local")


class MetricsServer:
    """Serves ``GET /metrics`` from a registry on its own port and thread."""

    def __init__(self, registry: Registry, bind: str, port: int) -> None:
        registry_ref = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = registry_ref.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                logger.debug("metrics: " + fmt, *args)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer((bind, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="metrics",
                                        daemon=True)

    def start(self) -> "MetricsServer":
        """Start serving in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        self.server.shutdown()
        self.server.server_close()
