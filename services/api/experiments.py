"""Experiments: checking a name and creating an experiment, for the JSON routes and the pages alike."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.api.access import project_for_new_experiment
from services.api.database import db
from services.api.errors import ApiError
from services.api.queries import iso
from shared.infra.db.tables import Experiment


NAME_LIMIT = 200


def experiment_json(experiment: Experiment) -> dict:
    return {"id": experiment.id, "name": experiment.name, "project": experiment.project.name,
            "created": iso(experiment.created)}


def valid_name(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_field", f"{what} must be a non-empty string", field=what)
    value = value.strip()
    if len(value) > NAME_LIMIT or "/" in value or any(ord(ch) < 32 for ch in value):
        raise ApiError(400, "invalid_field", f"{what} must be at most {NAME_LIMIT} characters, without '/' "
                       "or control characters", field=what)
    return value


def create_experiment(name: str, project_name: str | None) -> Experiment:
    """Shared with the web form. 409 when the name is taken anywhere in the instance."""
    session = db()
    if session.scalars(select(Experiment.id).where(Experiment.name == name)).first() is not None:
        raise ApiError(409, "experiment_exists", f"an experiment named {name!r} already exists")
    project = project_for_new_experiment(project_name)
    experiment = Experiment(name=name, project_id=project.id)
    session.add(experiment)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "experiment_exists", f"an experiment named {name!r} already exists") from None
    experiment.project = project
    return experiment
