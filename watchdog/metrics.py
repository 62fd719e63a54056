"""The instance's Prometheus metrics: of-watchdog's names plus the batch path's (served by ``MetricsServer``)."""

from __future__ import annotations

from faas_infer.promtext import MetricsServer, Registry

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
        self.admission_share = r.gauge("faas_infer_admission_slo_share",
                                       "Share of the SLO a request's predicted latency may fill to be admitted "
                                       "(below 1 while recent requests ran past the SLO)")
        self.gc_frozen = r.gauge("faas_infer_gc_frozen_objects",
                                 "Objects alive after load() that the cyclic garbage collector skips")
        self.handler_restarts = r.counter("faas_infer_handler_restarts_total",
                                          "Handler processes started again (handler_process=true)", ("reason",))
        self.redis_up = r.gauge("redis_up", "1 while the shared Redis queue is in use, 0 when degraded to local")


__all__ = ["MetricsServer", "WatchdogMetrics"]
