"""Celery app of the trainer (`celery -A services.trainer.app worker -Q train --pool solo`)."""
from __future__ import annotations

from celery.signals import setup_logging

from shared.infra.logs import configure_logging
from shared.infra.queue import make_celery

celery_app = make_celery("nucleus-trainer")
celery_app.conf.include = ["services.trainer.tasks"]


@setup_logging.connect
def _logging(**_kwargs) -> None:
    configure_logging("trainer")
