"""Re-segmentation routes: re-segment an experiment, compare counts per version (services.api.resegmentation does the work)."""
from __future__ import annotations

from flask import jsonify, request

from services.api.access import get_experiment, require_role
from services.api.errors import ApiError
from services.api.queries import ResultFilters
from services.api.resegmentation import parse_request, resegment, version_counts
from services.api.rest import api


@api.post("/experiments/<name>/resegment")
def post_resegment(name: str):
    require_role("uploader")
    experiment = get_experiment(name)
    if request.get_data(cache=True):
        body = request.get_json(silent=True, force=True)
        if body is None:
            raise ApiError(400, "invalid_body", 'send a JSON object such as {"version": "...", "condition": "control"}')
    else:
        body = {}
    version, filters = parse_request(body)
    return jsonify(resegment(experiment, version, filters)), 202


@api.get("/experiments/<name>/versions")
def experiment_versions(name: str):
    require_role("viewer")
    experiment = get_experiment(name)
    filters = ResultFilters(condition=request.args.get("condition") or None, well=request.args.get("well") or None)
    versions = version_counts(experiment, filters)
    return jsonify({"experiment": experiment.name, "versions": versions, "total": len(versions)})
