"""The `nucleus.segment` task: deliver one job to the pipeline, retrying transient faults with backoff."""
from __future__ import annotations

import logging
import random

from shared.infra import jobs
from shared.infra.settings import get_settings
from shared.infra.logs import bind_job
from shared.infra.queue import SEGMENT_TASK

from services.worker.app import celery_app
from services.worker.metrics import observe_outcome
from services.worker.pipeline import is_transient, process

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter: about 1, 2, 4, ... seconds, capped."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** retries) * random.uniform(0.75, 1.25)


@celery_app.task(name=SEGMENT_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def segment(self, job_id: str) -> str:
    settings = get_settings()
    with bind_job(job_id):
        retries = self.request.retries
        try:
            # a retry of this very message may take over the lease its earlier attempt left behind
            outcome = process(job_id, worker=self.request.hostname or "worker", takeover=retries > 0).status
            observe_outcome(outcome)
            return outcome
        except Exception as exc:
            if not is_transient(exc):
                raise
            if retries >= settings.task_max_retries:
                # not a failure of the image: the job stays open and the sweeper re-sends it later
                log.error("transient fault persists; leaving the job to the sweeper",
                          extra={"error": str(exc), "retries": retries})
                _release_quietly(job_id, str(exc), 0.0)
                observe_outcome("released")
                return "released"
            delay = backoff_seconds(retries)
            log.warning("transient fault; retrying", extra={"error": str(exc), "retries": retries,
                                                             "retry_in": round(delay, 2)})
            _release_quietly(job_id, str(exc), delay)
            observe_outcome("retry")
            raise self.retry(exc=exc, countdown=delay)


def _release_quietly(job_id: str, reason: str, delay: float) -> None:
    try:
        jobs.release(job_id, reason, delay, get_settings().job_lease_seconds)
    except Exception as exc:  # noqa: BLE001 - the database may be the thing that is down
        log.warning("could not release the job; its lease will run out", extra={"error": str(exc)})
