"""Model routes: list the versions of a project's line, and activate one (services.api.model_versions does the work)."""
from __future__ import annotations

from flask import jsonify, request

from services.api.access import require_role
from services.api.bodies import optional_json_object
from services.api.model_versions import activate_version, page_of_models, requested_project
from services.api.queries import page_from_request
from services.api.rest import api


@api.get("/models")
def list_models():
    require_role("viewer")
    project = requested_project(request.args.get("project") or None)
    page = page_from_request()
    rows, total = page_of_models(page, project)
    return jsonify({**page.body("models", rows, total), "project": project.name})


@api.post("/models/<version>/activate")
def activate_model(version: str):
    require_role("admin")
    body = optional_json_object('{"project": "default"}')
    return jsonify(activate_version(version, requested_project(body.get("project"))))
