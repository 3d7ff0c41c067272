"""Experiment routes: create, list, and an experiment's results and nuclei (services.api.experiments creates)."""
from __future__ import annotations

from flask import current_app, jsonify, request
from sqlalchemy import select

from services.api.access import get_experiment, require_role, visible
from services.api.database import db
from services.api.downloads import experiment_archive
from services.api.errors import ApiError
from services.api.experiments import create_experiment, experiment_json, valid_name
from services.api.exports import FORMATS as EXPORT_FORMATS, nuclei_export, results_export
from services.api.intake import accept_upload
from services.api.limits import check_upload_rate
from services.api.queries import ResultFilters, count_rows, page_from_request, page_of_results
from services.api.rest import api
from shared.infra.db.tables import Experiment, Project


@api.post("/experiments")
def post_experiment():
    require_role("uploader")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", 'send a JSON object such as {"name": "plate-1"}')
    name = valid_name(body.get("name"), "name")
    project = body.get("project")
    project = valid_name(project, "project") if project is not None else None
    return jsonify(experiment_json(create_experiment(name, project))), 201


@api.get("/experiments")
def list_experiments():
    require_role("viewer")
    page = page_from_request()
    session = db()
    query = visible(select(Experiment).join(Project, Project.id == Experiment.project_id))
    total = count_rows(session, query)
    experiments = session.scalars(query.order_by(Experiment.created.desc(), Experiment.id.desc())
                                  .offset(page.offset).limit(page.per_page)).all()
    return jsonify(page.body("experiments", [experiment_json(e) for e in experiments], total))


@api.get("/experiments/<name>")
def show_experiment(name: str):
    require_role("viewer")
    return jsonify(experiment_json(get_experiment(name)))


@api.post("/experiments/<name>/images")
def upload_images(name: str):
    principal = require_role("uploader")
    experiment = get_experiment(name)
    check_upload_rate(principal, len(request.files.getlist("file")))
    rows, accepted = accept_upload(experiment, request.files.getlist("file"), request.form,
                                   current_app.config["NUCLEUS_SETTINGS"], current_app.extensions["nucleus_store"])
    return jsonify({"images": rows}), 202 if accepted else 200


@api.get("/experiments/<name>/results")
def experiment_results(name: str):
    require_role("viewer")
    experiment = get_experiment(name)
    filters = ResultFilters.from_request()
    fmt = request.args.get("format") or "json"
    if fmt in EXPORT_FORMATS:  # a download of every matching row
        return results_export(db(), experiment, filters, fmt)
    if fmt != "json":
        raise ApiError(400, "invalid_query", f"format must be one of json, {', '.join(EXPORT_FORMATS)}")
    page = page_from_request()
    rows, total = page_of_results(db(), experiment, filters, page)
    return jsonify(page.body("results", rows, total))


@api.get("/experiments/<name>/nuclei.csv")
def experiment_nuclei(name: str):
    require_role("viewer")
    return nuclei_export(db(), get_experiment(name), ResultFilters.from_request(), "csv")


@api.get("/experiments/<name>/nuclei.parquet")
def experiment_nuclei_parquet(name: str):
    require_role("viewer")
    return nuclei_export(db(), get_experiment(name), ResultFilters.from_request(), "parquet")


@api.get("/experiments/<name>/archive.zip")
def experiment_archive_zip(name: str):
    require_role("viewer")
    return experiment_archive(db(), get_experiment(name), ResultFilters.from_request())
