"""Who is asking and what they may see.

A token has a role (viewer < uploader < admin) and optionally a project. An admin token, or a token
with no project, sees and writes every project; any other token sees only its own project's
experiments. Experiments outside a token's reach answer 404, as if they did not exist.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import g
from sqlalchemy import Select, select

from services.api.database import db
from services.api.errors import ApiError
from shared.infra.auth import ROLES, ensure_default_project, get_or_create_project
from shared.infra.db.tables import Experiment, Image, Project, Token


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str
    project_id: int | None

    @classmethod
    def from_token(cls, token: Token) -> "Principal":
        return cls(token_id=token.id, name=token.name, role=token.role, project_id=token.project_id)

    def has_role(self, role: str) -> bool:
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(role)

    @property
    def sees_every_project(self) -> bool:
        return self.role == "admin" or self.project_id is None


def current_principal() -> Principal:
    principal = g.get("principal")
    if principal is None:
        raise ApiError(401, "unauthorized", "sign in first: send 'Authorization: Bearer <token>'")
    return principal


def require_role(role: str) -> Principal:
    principal = current_principal()
    if not principal.has_role(role):
        raise ApiError(403, "forbidden", f"this needs the {role} role; the token has {principal.role}")
    return principal


def visible(query: Select) -> Select:
    """Restrict a query that involves Experiment to what the current principal may see."""
    principal = current_principal()
    if principal.sees_every_project:
        return query
    return query.where(Experiment.project_id == principal.project_id)


def get_experiment(name: str) -> Experiment:
    experiment = db().scalars(visible(select(Experiment).where(Experiment.name == name))).first()
    if experiment is None:
        raise ApiError(404, "experiment_not_found", f"no experiment named {name!r}")
    return experiment


def get_image(image_id: str) -> Image:
    query = visible(select(Image).join(Experiment, Image.experiment_id == Experiment.id).where(Image.id == image_id))
    image = db().scalars(query).first()
    if image is None:
        raise ApiError(404, "image_not_found", f"no image {image_id!r}")
    return image


def project_for_new_experiment(requested: str | None) -> Project:
    """The project a new experiment goes to: the one asked for, else the token's own, else `default`."""
    principal = current_principal()
    session = db()
    if not principal.sees_every_project:
        own = session.get(Project, principal.project_id)
        if requested is not None and requested != own.name:
            raise ApiError(403, "forbidden", f"this token may not write to project {requested!r}")
        return own
    if requested is None:
        return ensure_default_project(session)
    return get_or_create_project(session, requested)
