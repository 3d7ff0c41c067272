"""Model versions: list them, and activate one (a newer one, or an older one to roll back).

Workers follow the active row before each task, so an activation takes effect on the next job
without a restart. The API never loads a model: the shipped weights are registered from their
version sidecar (shared.registry.register_shipped), which needs no torch.
"""
from __future__ import annotations

import logging

from flask import current_app, jsonify
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.api.access import require_role
from services.api.database import db
from services.api.errors import ApiError
from services.api.queries import count_rows, iso, page_from_request
from services.api.rest import api
from shared import registry
from shared.config import Settings
from shared.db.models import ModelVersion
from shared.jobs import write_scope
from shared.storage import ObjectStore

log = logging.getLogger(__name__)


def model_json(row: ModelVersion) -> dict:
    return {"version": row.version, "parent": row.parent, "created": iso(row.created),
            "training_summary": row.training_summary or {}, "metrics": row.metrics or {}, "active": bool(row.active)}


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


def page_of_models(page) -> tuple[list[ModelVersion], int]:
    ensure_shipped_registered(current_app.config["NUCLEUS_SETTINGS"], current_app.extensions["nucleus_store"])
    session = db()
    query = select(ModelVersion)
    total = count_rows(session, query)
    rows = session.scalars(query.order_by(ModelVersion.created.desc(), ModelVersion.version)
                           .offset(page.offset).limit(page.per_page)).all()
    return rows, total


def activate_version(version: str) -> dict:
    """Make `version` the active model (shared with the pages). 404 when unknown, 409 when its weights
    are gone from the object store (workers could not load it)."""
    settings = current_app.config["NUCLEUS_SETTINGS"]
    ensure_shipped_registered(settings, current_app.extensions["nucleus_store"])
    with write_scope(settings.resolved_database_url) as session:
        row = session.get(ModelVersion, version)
        if row is None:
            raise ApiError(404, "model_not_found", f"no model version {version!r}")
        if not current_app.extensions["nucleus_store"].exists(row.object_key):
            raise ApiError(409, "model_weights_missing", f"the weights of {version} are missing from the object store")
        registry.activate(session, version)
        body = model_json(row)
    log.info("model activated", extra={"model_version": version})
    return body


@api.get("/models")
def list_models():
    require_role("viewer")
    page = page_from_request()
    rows, total = page_of_models(page)
    return jsonify(page.body("models", [model_json(r) for r in rows], total))


@api.post("/models/<version>/activate")
def activate_model(version: str):
    require_role("admin")
    return jsonify(activate_version(version))
