"""The sweeper: the job table is the truth, so every job left in `queued` or `running` past its lease
(a message the broker lost, a worker that died) is sent again with a new lease.

Run: `python -m services.sweeper`. Tests call `sweep_once()`.
"""
from __future__ import annotations

import logging
import signal
import threading

from shared.infra import jobs
from shared.infra.settings import get_settings
from shared.infra.db.session import session_scope
from shared.infra.logs import bind_job
from shared.infra.queue import enqueue_segment, enqueue_training

log = logging.getLogger("services.sweeper")


def sweep_once(lease_seconds: int | None = None) -> list[str]:
    """Re-enqueue every stale job once; return the ids sent."""
    lease = lease_seconds or get_settings().job_lease_seconds
    with session_scope() as session:
        stale = jobs.list_stale(session, lease_seconds=lease)
    sent = []
    for job_id in stale:
        with bind_job(job_id):
            if not jobs.requeue_stale(job_id, lease):
                continue  # finished or re-leased since we looked
            try:
                enqueue_segment(job_id)
            except Exception as exc:  # noqa: BLE001 - the broker is down: the new lease runs out, we try again
                log.warning("could not re-enqueue a stale job", extra={"error": str(exc)})
                continue
            log.info("re-enqueued a stale job")
            sent.append(job_id)
    return sent


def sweep_training_runs(lease_seconds: int | None = None) -> list[str]:
    """Re-send queued training runs whose message was lost (a running run is the trainer's to resume)."""
    lease = lease_seconds or get_settings().job_lease_seconds
    sent = []
    for run_id in jobs.requeue_stale_training_runs(lease):
        try:
            enqueue_training(run_id)
        except Exception as exc:  # noqa: BLE001 - the broker is down: the new lease runs out, we try again
            log.warning("could not re-enqueue a training run", extra={"run_id": run_id, "error": str(exc)})
            continue
        log.info("re-enqueued a queued training run", extra={"run_id": run_id})
        sent.append(run_id)
    return sent


def run_forever(stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    interval = get_settings().sweep_interval_seconds
    log.info("sweeper started", extra={"interval_seconds": interval, "lease_seconds": get_settings().job_lease_seconds})
    while not stop.is_set():
        try:
            sweep_once()
            sweep_training_runs()
        except Exception as exc:  # noqa: BLE001 - a database outage must not end the loop
            log.warning("sweep failed; will try again", extra={"error": str(exc)})
        stop.wait(interval)
    log.info("sweeper stopped")


def main() -> None:
    from shared.infra.logs import configure_logging

    configure_logging("sweeper")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_forever(stop)
