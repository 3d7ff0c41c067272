"""The `nucleus.train` task: one training run (see services.trainer.runs)."""
from __future__ import annotations

import logging

from celery.signals import worker_ready
from sqlalchemy import select

from shared.infra.settings import get_settings
from shared.infra.db.tables import JobStatus, TrainingRun
from shared.infra.db.session import session_scope
from shared.infra.queue import TRAIN_TASK, enqueue_training
from shared.infra.storage import get_store

from services.trainer.app import celery_app
from services.trainer.runs import execute, fail

log = logging.getLogger(__name__)


@celery_app.task(name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def train(self, run_id: str) -> str:
    try:
        execute(run_id, get_settings(), get_store())
    except Exception as exc:  # noqa: BLE001 - any failure ends the run with its reason; nothing was published
        log.exception("training run failed", extra={"run_id": run_id})
        fail(run_id, f"{type(exc).__name__}: {exc}")
        return "failed"
    return "done"


@worker_ready.connect
def _resume_interrupted_runs(**_kwargs) -> None:
    """A trainer that died mid-run left its run `running`, and an embedded broker may have dropped the
    message: send those runs again. There is one trainer per installation, so nothing else owns them."""
    with session_scope() as session:
        open_runs = session.scalars(select(TrainingRun.id).where(
            TrainingRun.status.in_((JobStatus.queued, JobStatus.running))).order_by(TrainingRun.created)).all()
    for run_id in open_runs:
        log.info("re-sending an interrupted training run", extra={"run_id": run_id})
        enqueue_training(run_id)
