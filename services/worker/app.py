"""Celery app of the segmentation worker (`celery -A services.worker.app worker -Q segment ...`)."""
from __future__ import annotations

import logging

from celery.signals import setup_logging, worker_ready

from shared.infra.logs import configure_logging
from shared.infra.queue import make_celery

log = logging.getLogger("services.worker")

celery_app = make_celery("nucleus-worker")
celery_app.conf.include = ["services.worker.tasks"]


@setup_logging.connect
def _logging(**_kwargs) -> None:
    # connecting this signal keeps Celery from installing its own text handlers
    configure_logging("worker")


@worker_ready.connect
def _on_ready(sender=None, **_kwargs) -> None:
    hostname = getattr(sender, "hostname", None)
    _start_metrics(hostname)
    _resume_orphans(hostname)
    _warm_model()


def _start_metrics(worker: str | None) -> None:
    from shared.infra.settings import get_settings
    from services.worker.metrics import start_metrics_server

    start_metrics_server(worker, get_settings().worker_metrics_port)


def _resume_orphans(worker: str | None) -> None:
    """A worker restarted under the same name (as `nucleus up` does) re-sends the job its killed
    predecessor was running at once, instead of leaving it to the sweeper after the lease."""
    from shared.infra.settings import get_settings
    from shared.infra.jobs import requeue_orphans
    from shared.infra.logs import bind_job
    from shared.infra.queue import enqueue_segment

    if not worker:
        return
    try:
        for job_id in requeue_orphans(worker, get_settings().job_lease_seconds):
            with bind_job(job_id):
                enqueue_segment(job_id)
                log.info("re-enqueued the job a previous run of this worker left running", extra={"worker": worker})
    except Exception:  # noqa: BLE001 - the sweeper covers whatever this misses
        log.exception("could not resume orphaned jobs", extra={"worker": worker})


def _warm_model() -> None:
    """Load the model before the first job arrives, so the first upload does not pay for it."""
    from services.worker.model_cache import model_cache

    try:
        model_cache().current()
    except Exception:  # noqa: BLE001 - the first task will try again and report per job
        log.exception("could not load the model at start-up")
