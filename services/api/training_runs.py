"""Training runs: start one in a project (an admin, or enough new labels there), and follow it.

The run row is the truth; the broker only delivers `nucleus.train` to the trainer. A run is recorded
before it is enqueued, so a broker that is down still answers 202: the run waits in SQL, queued.
"""
from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import func, or_, select, text

from services.api.access import current_principal
from services.api.database import db
from services.api.errors import ApiError
from services.api.queries import count_rows, iso
from shared.infra.settings import Settings
from shared.infra.auth import DEFAULT_PROJECT, ensure_default_project
from shared.infra.db.tables import Experiment, Image, JobStatus, Label, Project, TrainingRun
from shared.infra.db.session import write_scope


log = logging.getLogger(__name__)

MAX_EPOCHS = 100
OPEN = (JobStatus.queued, JobStatus.running)
AUTO_TRAIN_LOCK = 0x6E75636C  # PostgreSQL advisory lock: one automatic start decided at a time


def run_json(run: TrainingRun, projects: dict[int, str] | None = None) -> dict:
    metrics = run.metrics or {}
    if projects is None:
        projects = dict(db().execute(select(Project.id, Project.name)).all())
    return {"id": run.id, "project": projects.get(run.project_id, DEFAULT_PROJECT), "status": run.status.value,
            "progress": run.progress, "metrics": metrics, "decision": metrics.get("decision"),
            "version": run.version, "promoted": run.promoted, "error": run.error, "epochs": run.epochs,
            "force_promote": run.force_promote, "created": iso(run.created), "started": iso(run.started),
            "finished": iso(run.finished)}


def parse_run_request(body) -> tuple[int, bool]:
    """(epochs, force_promote) from a request body; both optional (`project` is read by the route)."""
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
    from shared.infra.queue import enqueue_training

    try:
        enqueue_training(run_id)
    except Exception as exc:  # any broker fault: the run stays queued in SQL
        log.warning("could not enqueue training run %s: %s", run_id, exc, extra={"run_id": run_id})


def create_run(settings: Settings, epochs: int = 1, force_promote: bool = False, project_id: int | None = None) -> str:
    """Record a queued run of `project_id`'s line (None: `default`), then enqueue it. Returns its id."""
    with write_scope(settings.resolved_database_url) as session:
        if project_id is None:
            project_id = ensure_default_project(session).id
        run = TrainingRun(status=JobStatus.queued, epochs=epochs, force_promote=force_promote, project_id=project_id)
        session.add(run)
        session.flush()
        run_id = run.id
    _send(run_id)
    log.info("training run queued", extra={"run_id": run_id, "epochs": epochs, "force_promote": force_promote})
    return run_id


def start_run_if_enough_labels(settings: Settings) -> str | None:
    """Start a run in each project where `auto_train_after_labels` labels arrived since its newest run
    was created and none of its runs is queued or running. Returns a new run's id, or None."""
    threshold = settings.auto_train_after_labels
    if threshold <= 0:
        return None
    started = []
    with write_scope(settings.resolved_database_url) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUTO_TRAIN_LOCK})
        default_id = ensure_default_project(session).id
        for project_id in session.scalars(select(Project.id)).all():
            in_project = (TrainingRun.project_id == project_id if project_id != default_id
                          else or_(TrainingRun.project_id == project_id, TrainingRun.project_id.is_(None)))
            if session.scalar(select(func.count()).select_from(TrainingRun)
                              .where(in_project, TrainingRun.status.in_(OPEN))):
                continue
            newest = session.scalar(select(func.max(TrainingRun.created)).where(in_project))
            fresh = (select(func.count()).select_from(Label).join(Image, Image.id == Label.image_id)
                     .join(Experiment, Experiment.id == Image.experiment_id)
                     .where(Experiment.project_id == project_id))
            if newest is not None:
                fresh = fresh.where(Label.created > newest)
            if session.scalar(fresh) < threshold:
                continue
            run = TrainingRun(status=JobStatus.queued, epochs=1, force_promote=False, project_id=project_id)
            session.add(run)
            session.flush()
            started.append(run.id)
    for run_id in started:
        _send(run_id)
        log.info("training run started automatically", extra={"run_id": run_id, "after_labels": threshold})
    return started[0] if started else None


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


def project_for_run(name) -> int:
    """The project a run trains: the one named, else the token's own, else `default` (its id)."""
    if name is not None and (not isinstance(name, str) or not name):
        raise ApiError(400, "invalid_field", "project must be a project's name", field="project")
    principal = current_principal()
    if name is None and not principal.sees_every_project:
        return principal.project_id
    session = db()
    project = session.scalar(select(Project).where(Project.name == (name or DEFAULT_PROJECT)))
    if project is None:
        if name is None:
            with write_scope(current_app.config["NUCLEUS_SETTINGS"].resolved_database_url) as writer:
                return ensure_default_project(writer).id
        raise ApiError(404, "project_not_found", f"no project named {name!r}")
    return project.id
