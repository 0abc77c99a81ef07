"""Prometheus metrics (prefix `hidecl_`, base units, counters end in `_total`) on their own HTTP port.

Latency buckets fit what the server measures: from the embedded benchmark's sub-millisecond graphs on a
CPU (see README "Serving") up to ViT-B batches of seconds.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
STAGES = ("queue", "preprocess", "router", "classifier", "total")


class Metrics:
    """Every metric of the server, in its own registry (so tests can run several servers in one process)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("hidecl_requests", "Requests by model, answering bundle version and gRPC status code.",
                                ["model", "version", "code"], registry=r)
        self.stage_seconds = Histogram("hidecl_request_stage_duration_seconds",
                                       "Per-request latency by stage: queue wait, preprocess (image decoding), "
                                       "router graph, classifier graph, total.", ["model", "stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("hidecl_batch_size", "Samples per executed batch (dynamic batching).", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.dropped = Counter("hidecl_batch_dropped_requests", "Queued requests dropped before execution: "
                               "cancelled by the caller or past their deadline.", ["model"], registry=r)
        self.queue_depth = Gauge("hidecl_queue_depth", "Requests waiting for a batch.", ["model"], registry=r)
        self.in_flight = Gauge("hidecl_in_flight_requests", "Requests being handled.", registry=r)
        self.routed = Counter("hidecl_routed_samples", "Samples by task they were routed to (source: router or "
                              "the caller's task hint).", ["task", "source"], registry=r)
        self.confidence = Histogram("hidecl_router_confidence", "Router confidence in the chosen task, per routed "
                                    "sample: mass at low values means traffic that no learned task explains.",
                                    buckets=CONFIDENCE_BUCKETS, registry=r)
        self.bundle = Info("hidecl_bundle", "The serving bundle version.", registry=r)
        self.bundle_version = Gauge("hidecl_bundle_version", "Version number of the serving bundle.", registry=r)
        self.provider = Gauge("hidecl_execution_provider_info", "onnxruntime execution providers: requested and "
                              "actually used (1) by the serving bundle.", ["provider", "requested"], registry=r)
        self.swaps = Counter("hidecl_bundle_swaps", "Hot swaps to a new bundle version.", registry=r)
        self.load_failures = Counter("hidecl_bundle_load_failures", "Bundle versions that failed to load.",
                                     registry=r)
        self.auth_failures = Counter("hidecl_auth_failures", "Calls refused for a missing or invalid token.",
                                     ["reason"], registry=r)
        self.poll_errors = Counter("hidecl_bundle_poll_errors", "Bundle root polls that failed (polling goes on).",
                                   registry=r)
        self.ignored_entries = Gauge("hidecl_bundle_root_ignored_entries", "Entries of the bundle root that are no "
                                     "version folder (bad names, links leaving the root), at the last scan.",
                                     registry=r)
        self.inflight_bytes = Gauge("hidecl_inflight_bytes", "Request bytes and decoded pixels held by admitted "
                                    "requests (bounded by --max-inflight-mb).", registry=r)

    def serving(self, version: int, method: str, routing: str, requested: tuple[str, ...], used: list[str]) -> None:
        """Record the bundle that now answers and the providers it runs on."""
        self.bundle.info({"version": str(version), "method": method, "routing": routing})
        self.bundle_version.set(version)
        self.provider.clear()
        for name in dict.fromkeys([*requested, *used]):
            self.provider.labels(provider=name, requested=str(name in requested).lower()).set(int(name in used))
