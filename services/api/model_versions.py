"""Model versions and each project's model line: list them, and activate one in a project (a newer one,
or an older one to roll back), for the JSON routes and the pages alike.

Workers ask the registry for a job's version before each task, so an activation takes effect on the
next job of that project without a restart, and never touches another project. The API never loads a
model: the shipped weights are registered from their version sidecar (shared.infra.registry.register_shipped),
which needs no torch. An admin activating the version of a run that awaited an admin records that
decision on the run.
"""
from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from services.api.access import current_principal
from services.api.database import db
from services.api.errors import ApiError
from services.api.queries import count_rows, iso
from shared.infra import registry
from shared.infra.auth import DEFAULT_PROJECT, ensure_default_project
from shared.infra.settings import Settings
from shared.infra.db.tables import ModelVersion, Project, TrainingRun, utcnow
from shared.infra.db.session import write_scope
from shared.infra.storage import ObjectStore

log = logging.getLogger(__name__)

AWAITING_ADMIN, ACTIVATED_BY_ADMIN = "awaiting_admin", "activated_by_admin"  # a run's metrics["decision"]


def model_json(row: ModelVersion, line: str | None, active_in: list[str], project: str) -> dict:
    """A version as listed for `project`: `active` says whether it is that project's active version;
    `project` names the line it was trained in (None: shipped), `active_in` every project using it."""
    return {"version": row.version, "parent": row.parent, "project": line,
            "created": iso(row.created), "training_summary": row.training_summary or {},
            "metrics": row.metrics or {}, "active": project in active_in, "active_in": active_in}


def project_names() -> dict[int, str]:
    return dict(db().execute(select(Project.id, Project.name)).all())


def ensure_shipped_registered(settings: Settings, store: ObjectStore) -> None:
    """Register the shipped weights once, so that they are listed and can be rolled back to."""
    version = registry.shipped_sidecar_version()
    if version is None or db().get(ModelVersion, version) is not None:
        return
    try:
        with write_scope(settings.resolved_database_url) as session:
            registry.register_shipped(session, store)
    except IntegrityError:
        pass  # another process registered them at the same moment
    db().expire_all()


def requested_project(name: str | None) -> Project:
    """The project a models request is about: the one named, else the token's own, else `default`.
    404 for an unknown name; 403 for another project than a project token's own."""
    principal = current_principal()
    session = db()
    if name is not None and (not isinstance(name, str) or not name):
        raise ApiError(400, "invalid_field", "project must be a project's name", field="project")
    if name is None:
        if not principal.sees_every_project:
            return session.get(Project, principal.project_id)
        name = DEFAULT_PROJECT
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        if name == DEFAULT_PROJECT:
            with write_scope(current_app.config["NUCLEUS_SETTINGS"].resolved_database_url) as writer:
                ensure_default_project(writer)
            return session.scalar(select(Project).where(Project.name == name))
        raise ApiError(404, "project_not_found", f"no project named {name!r}")
    if not principal.sees_every_project and project.id != principal.project_id:
        raise ApiError(403, "forbidden", f"this token may not see project {name!r}")
    return project


def active_by_project() -> dict[str, str]:
    """{project name: its active version} for every project the current token may see."""
    session = db()
    principal = current_principal()
    projects = select(Project).order_by(Project.name)
    if not principal.sees_every_project:
        projects = projects.where(Project.id == principal.project_id)
    return {p.name: row.version for p in session.scalars(projects)
            if (row := registry.active_version(session, p.id)) is not None}


def _active_in(actives: dict[str, str]) -> dict[str, list[str]]:
    by_version: dict[str, list[str]] = {}
    for name, version in actives.items():
        by_version.setdefault(version, []).append(name)
    return by_version


def model_lines() -> list[dict]:
    """Each project's line the signed-in person may see, for the models page: its active version, and the
    versions trained in it (newest first) with their parents and metrics."""
    session = db()
    actives = active_by_project()
    names = project_names()
    trained: dict[int, list[ModelVersion]] = {}
    for row in session.scalars(select(ModelVersion).where(ModelVersion.project_id.is_not(None))
                               .order_by(ModelVersion.created.desc(), ModelVersion.version)):
        trained.setdefault(row.project_id, []).append(row)
    by_version = _active_in(actives)
    principal = current_principal()
    return [{"project": name, "active": actives.get(name),
             "versions": [model_json(r, name, by_version.get(r.version, []), name) for r in trained.get(pid, [])]}
            for pid, name in sorted(names.items(), key=lambda item: item[1])
            if principal.sees_every_project or pid == principal.project_id]


def page_of_models(page, project: Project) -> tuple[list[dict], int]:
    ensure_shipped_registered(current_app.config["NUCLEUS_SETTINGS"], current_app.extensions["nucleus_store"])
    session = db()
    query = select(ModelVersion)
    total = count_rows(session, query)
    rows = session.scalars(query.order_by(ModelVersion.created.desc(), ModelVersion.version)
                           .offset(page.offset).limit(page.per_page)).all()
    active_in, names = _active_in(active_by_project()), project_names()
    return [model_json(r, names.get(r.project_id), active_in.get(r.version, []), project.name) for r in rows], total


def activate_version(version: str, project: Project) -> dict:
    """Make `version` the active model of `project` (shared with the pages). 404 when unknown, 409 when
    its weights are gone from the object store (workers could not load it)."""
    settings = current_app.config["NUCLEUS_SETTINGS"]
    ensure_shipped_registered(settings, current_app.extensions["nucleus_store"])
    with write_scope(settings.resolved_database_url) as session:
        row = session.get(ModelVersion, version)
        if row is None:
            raise ApiError(404, "model_not_found", f"no model version {version!r}")
        if not current_app.extensions["nucleus_store"].exists(row.object_key):
            raise ApiError(409, "model_weights_missing", f"the weights of {version} are missing from the object store")
        registry.activate(session, version, project.id)
        _record_admin_decision(session, version, project)
    db().expire_all()
    log.info("model activated", extra={"model_version": version, "project": project.name})
    row = db().get(ModelVersion, version)
    return model_json(row, project_names().get(row.project_id), _active_in(active_by_project()).get(version, []),
                      project.name)


def _record_admin_decision(session, version: str, project: Project) -> None:
    """The run of `project` that made `version` and awaited an admin now says who activated it, and when."""
    in_project = TrainingRun.project_id == project.id
    if project.name == DEFAULT_PROJECT:
        in_project = or_(in_project, TrainingRun.project_id.is_(None))
    for run in session.scalars(select(TrainingRun).where(TrainingRun.version == version, in_project)):
        metrics = run.metrics or {}
        if metrics.get("decision") != AWAITING_ADMIN:
            continue
        run.metrics = {**metrics, "decision": ACTIVATED_BY_ADMIN, "gate_decision": AWAITING_ADMIN,
                       "activated_by": current_principal().name, "activated_at": iso(utcnow())}
        log.info("awaiting run activated by an admin", extra={"run_id": run.id, "model_version": version})
