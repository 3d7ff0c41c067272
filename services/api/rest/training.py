"""Training runs: start one (an admin, or enough new labels), and follow it.

The run row is the truth; the broker only delivers `nucleus.train` to the trainer. A run is recorded
before it is enqueued, so a broker that is down still answers 202: the run waits in SQL, queued.
"""
from __future__ import annotations

import logging

from flask import current_app, jsonify, request
from sqlalchemy import func, select, text

from services.api.access import require_role
from services.api.database import db
from services.api.errors import ApiError
from services.api.queries import count_rows, iso, page_from_request
from services.api.rest import api
from shared.config import Settings
from shared.db.models import JobStatus, Label, TrainingRun
from shared.jobs import write_scope

log = logging.getLogger(__name__)

MAX_EPOCHS = 100
OPEN = (JobStatus.queued, JobStatus.running)
AUTO_TRAIN_LOCK = 0x6E75636C  # PostgreSQL advisory lock: one automatic start decided at a time


def run_json(run: TrainingRun) -> dict:
    return {"id": run.id, "status": run.status.value, "progress": run.progress, "metrics": run.metrics or {},
            "version": run.version, "promoted": run.promoted, "error": run.error, "epochs": run.epochs,
            "force_promote": run.force_promote, "created": iso(run.created), "started": iso(run.started),
            "finished": iso(run.finished)}


def parse_run_request(body) -> tuple[int, bool]:
    """(epochs, force_promote) from a request body; both optional."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", 'send a JSON object such as {"epochs": 1, "force_promote": false}')
    epochs = body.get("epochs", 1)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= MAX_EPOCHS:
        raise ApiError(400, "invalid_field", f"epochs must be a whole number from 1 to {MAX_EPOCHS}", field="epochs")
    force = body.get("force_promote", False)
    if not isinstance(force, bool):
        raise ApiError(400, "invalid_field", "force_promote must be true or false", field="force_promote")
    return epochs, force


def _send(run_id: str) -> None:
    from shared.queue import enqueue_training

    try:
        enqueue_training(run_id)
    except Exception as exc:  # any broker fault: the run stays queued in SQL
        log.warning("could not enqueue training run %s: %s", run_id, exc, extra={"run_id": run_id})


def create_run(settings: Settings, epochs: int = 1, force_promote: bool = False) -> str:
    """Record a queued run, then enqueue it. Returns its id."""
    with write_scope(settings.resolved_database_url) as session:
        run = TrainingRun(status=JobStatus.queued, epochs=epochs, force_promote=force_promote)
        session.add(run)
        session.flush()
        run_id = run.id
    _send(run_id)
    log.info("training run queued", extra={"run_id": run_id, "epochs": epochs, "force_promote": force_promote})
    return run_id


def start_run_if_enough_labels(settings: Settings) -> str | None:
    """Start a run when `auto_train_after_labels` labels arrived since the newest run was created and
    none is queued or running. Returns the new run's id, or None."""
    threshold = settings.auto_train_after_labels
    if threshold <= 0:
        return None
    with write_scope(settings.resolved_database_url) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUTO_TRAIN_LOCK})
        if session.scalar(select(func.count()).select_from(TrainingRun).where(TrainingRun.status.in_(OPEN))):
            return None
        newest = session.scalar(select(func.max(TrainingRun.created)))
        fresh = select(func.count()).select_from(Label)
        if newest is not None:
            fresh = fresh.where(Label.created > newest)
        if session.scalar(fresh) < threshold:
            return None
        run = TrainingRun(status=JobStatus.queued, epochs=1, force_promote=False)
        session.add(run)
        session.flush()
        run_id = run.id
    _send(run_id)
    log.info("training run started automatically", extra={"run_id": run_id, "after_labels": threshold})
    return run_id


def get_run(run_id: str) -> TrainingRun:
    run = db().get(TrainingRun, run_id)
    if run is None:
        raise ApiError(404, "training_run_not_found", f"no training run {run_id!r}")
    return run


def page_of_runs(page) -> tuple[list[TrainingRun], int]:
    session = db()
    query = select(TrainingRun)
    total = count_rows(session, query)
    runs = session.scalars(query.order_by(TrainingRun.created.desc(), TrainingRun.id)
                           .offset(page.offset).limit(page.per_page)).all()
    return runs, total


@api.post("/training-runs")
def post_training_run():
    require_role("admin")
    if request.get_data(cache=True):
        body = request.get_json(silent=True, force=True)
        if body is None:
            raise ApiError(400, "invalid_body", 'send a JSON object such as {"epochs": 1, "force_promote": false}')
    else:
        body = {}
    epochs, force = parse_run_request(body)
    run_id = create_run(current_app.config["NUCLEUS_SETTINGS"], epochs, force)
    return jsonify({"id": run_id}), 202


@api.get("/training-runs")
def list_training_runs():
    require_role("viewer")
    page = page_from_request()
    runs, total = page_of_runs(page)
    return jsonify(page.body("training_runs", [run_json(r) for r in runs], total))


@api.get("/training-runs/<run_id>")
def show_training_run(run_id: str):
    require_role("viewer")
    return jsonify(run_json(get_run(run_id)))
