"""Training-run routes: start one (an admin), list and follow them (services.api.training_runs does the work)."""
from __future__ import annotations

from flask import current_app, jsonify
from sqlalchemy import select

from services.api.access import require_role
from services.api.bodies import optional_json_object
from services.api.database import db
from services.api.queries import page_from_request
from services.api.rest import api
from services.api.training_runs import create_run, get_run, page_of_runs, parse_run_request, project_for_run, run_json
from shared.infra.db.tables import Project


@api.post("/training-runs")
def post_training_run():
    require_role("admin")
    body = optional_json_object('{"epochs": 1, "force_promote": false}')
    epochs, force = parse_run_request(body)
    run_id = create_run(current_app.config["NUCLEUS_SETTINGS"], epochs, force, project_for_run(body.get("project")))
    return jsonify({"id": run_id}), 202


@api.get("/training-runs")
def list_training_runs():
    require_role("viewer")
    page = page_from_request()
    runs, total = page_of_runs(page)
    projects = dict(db().execute(select(Project.id, Project.name)).all())
    return jsonify(page.body("training_runs", [run_json(r, projects) for r in runs], total))


@api.get("/training-runs/<run_id>")
def show_training_run(run_id: str):
    require_role("viewer")
    return jsonify(run_json(get_run(run_id)))
