"""/healthz: open, 200 once the database answers, 503 with Retry-After while it does not."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from services.api.database import db
from services.api.errors import RETRY_AFTER_SECONDS

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():
    checks = {}
    try:
        db().execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    try:
        current_app.extensions["nucleus_store"].ping()
        checks["object_store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, but only the database decides readiness
        checks["object_store"] = f"unavailable: {exc.__class__.__name__}"
    if checks["database"] != "ok":
        return jsonify({"status": "unavailable", "checks": checks}), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return jsonify({"status": "ok", "checks": checks})
