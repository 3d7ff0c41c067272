"""Prometheus metrics of one worker process, served over HTTP by that process.

Enabled by NUCLEUS_WORKER_METRICS_PORT (0, the default, turns it off). A worker named
`segment-<i>@host` serves on that port + i, so the workers of `nucleus up --workers N` get ports
base+1 .. base+N, and a compose service with one worker per container uses base+1. A worker that
cannot bind its port logs it and carries on: metrics never stop processing.
"""
from __future__ import annotations

import logging
import re

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

TASKS = Counter("nucleus_worker_tasks", "Task deliveries handled, by outcome "
                "(done, failed, skipped, duplicate, retry, released)", ["outcome"])
TASK_SECONDS = Histogram("nucleus_worker_task_seconds", "Time per completed job (fetch to outputs)",
                         buckets=DURATION_BUCKETS)
MODEL_SECONDS = Histogram("nucleus_worker_model_seconds", "Segmentation time per completed job",
                          buckets=DURATION_BUCKETS)
MODEL_INFO = Gauge("nucleus_worker_model_info", "The model version this worker used last", ["version"])

_NAME_INDEX = re.compile(r"^[^@]*?-(\d+)@")


def worker_index(hostname: str | None) -> int:
    """`segment-3@host` -> 3; a name without an index -> 0."""
    found = _NAME_INDEX.match(hostname or "")
    return int(found.group(1)) if found else 0


def start_metrics_server(hostname: str | None, base_port: int) -> int | None:
    """Serve /metrics on base_port + the worker's index; return the port, or None when off or busy."""
    if base_port <= 0:
        return None
    port = base_port + worker_index(hostname)
    try:
        start_http_server(port, addr="0.0.0.0")
    except OSError as exc:
        log.warning("worker metrics port unavailable; serving no metrics", extra={"port": port, "error": str(exc)})
        return None
    log.info("worker metrics listening", extra={"port": port})
    return port


def observe_outcome(outcome: str) -> None:
    TASKS.labels(outcome).inc()


def observe_result(result: dict) -> None:
    TASK_SECONDS.observe(result["seconds_total"])
    MODEL_SECONDS.observe(result["seconds_model"])
    MODEL_INFO.clear()
    MODEL_INFO.labels(result["model_version"]).set(1)
