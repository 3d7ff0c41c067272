"""Re-segmentation routes: re-segment an experiment, compare counts per version (services.api.resegmentation does the work)."""
from __future__ import annotations

from flask import jsonify, request

from services.api.access import get_experiment, require_role
from services.api.bodies import optional_json_object
from services.api.queries import ResultFilters
from services.api.resegmentation import parse_request, resegment, version_counts
from services.api.rest import api


@api.post("/experiments/<name>/resegment")
def post_resegment(name: str):
    require_role("uploader")
    experiment = get_experiment(name)
    body = optional_json_object('{"version": "...", "condition": "control"}')
    version, filters = parse_request(body)
    return jsonify(resegment(experiment, version, filters)), 202


@api.get("/experiments/<name>/versions")
def experiment_versions(name: str):
    require_role("viewer")
    experiment = get_experiment(name)
    filters = ResultFilters(condition=request.args.get("condition") or None, well=request.args.get("well") or None)
    versions = version_counts(experiment, filters)
    return jsonify({"experiment": experiment.name, "versions": versions, "total": len(versions)})
