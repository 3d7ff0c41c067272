"""The `nucleus.train` task. A placeholder until the retraining issue (issue 4): it records the run as
failed with a clear reason, so a run requested through the API never sits in `queued` forever."""
from __future__ import annotations

import logging

from sqlalchemy import update

from shared.db.models import JobStatus, TrainingRun, utcnow
from shared.jobs import write_scope
from shared.queue import TRAIN_TASK

from services.trainer.app import celery_app

log = logging.getLogger(__name__)

NOT_YET = "training is not available yet in this version of nucleus"


@celery_app.task(name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def train(self, run_id: str) -> str:
    with write_scope() as session:
        changed = session.execute(
            update(TrainingRun).where(TrainingRun.id == run_id,
                                      TrainingRun.status.in_((JobStatus.queued, JobStatus.running)))
            .values(status=JobStatus.failed, error=NOT_YET, finished=utcnow())
            .execution_options(synchronize_session=False)).rowcount
    log.info("training run refused: not implemented yet", extra={"run_id": run_id, "changed": changed})
    return "failed"
