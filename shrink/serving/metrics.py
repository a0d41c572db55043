"""Prometheus metrics of the shrink predictor, served on KServe's own ``/metrics``.

KServe's ``/metrics`` exposes the default ``prometheus_client`` registry, so
metrics defined here appear next to KServe's own (``request_predict_seconds``
...). What they answer: how many requests and with what outcome, how long they
took end to end inside the server, how well batching and the cache work, and
which model version is serving. With ``workers > 1`` each worker process keeps
its own counts, as KServe's own metrics do.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "shrink_serve_requests", "Inference requests by protocol and HTTP status", ["model", "protocol", "code"]
)
LATENCY = Histogram(
    "shrink_serve_request_seconds",
    "Inference request latency inside the server, end to end",
    ["model", "protocol"],
    buckets=_LATENCY_BUCKETS,
)
TEXTS = Counter("shrink_serve_texts", "Texts answered", ["model"])
BATCH_SIZE = Histogram(
    "shrink_serve_batch_size", "Texts per model run (dynamic batching)", ["model"], buckets=_BATCH_BUCKETS
)
CACHE_HITS = Counter("shrink_serve_cache_hits", "Texts answered from the answer cache", ["model"])
CACHE_MISSES = Counter("shrink_serve_cache_misses", "Texts the answer cache did not hold", ["model"])
CACHE_ENTRIES = Gauge("shrink_serve_cache_entries", "Answers held by the cache", ["model"])
MODEL_INFO = Gauge(
    "shrink_serve_model_info",
    "The version being served (value 1)",
    ["model", "version", "content_hash", "candidate", "format", "precision"],
)
READY = Gauge("shrink_serve_model_ready", "1 when a version is loaded and answering", ["model"])
SWAPS = Counter("shrink_serve_model_swaps", "Versions swapped in (the first load included)", ["model"])
FAILURES = Counter(
    "shrink_serve_model_failures",
    "Versions that could not be read, fetched, verified or loaded; the version before keeps serving",
    ["model", "stage"],
)
LOAD_SECONDS = Gauge("shrink_serve_model_load_seconds", "Load and warm-up time of the version being served", ["model"])
