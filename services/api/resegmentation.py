"""Re-segmenting an experiment (or a filtered part of it) with its project's active model version or a
chosen one, and comparing counts between the versions that segmented it.

A re-segmentation adds one job per image naming the version (results keep the version that made them;
the history shows each image's newest job). An image that is being segmented, or that already has a
result from that version, is skipped, so sending the same request twice adds nothing.
"""
from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import exists, func, select
from sqlalchemy.orm import aliased

from services.api.database import db
from services.api.errors import ApiError
from services.api.intake import enqueue
from services.api.model_versions import ensure_shipped_registered
from services.api.queries import ResultFilters, experiment_query, iso
from shared.infra import registry
from shared.infra.db.tables import Experiment, Image, Job, JobStatus, ModelVersion, Result
from shared.infra.db.session import write_scope


log = logging.getLogger(__name__)

OPEN = (JobStatus.queued, JobStatus.running)
FILTER_FIELDS = ("condition", "well", "status")


def parse_request(body) -> tuple[str | None, ResultFilters]:
    """(version or None, filters) from a request body; every field optional."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", 'send a JSON object such as {"version": "...", "condition": "control"}')
    for field in ("version", *FILTER_FIELDS):
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or not value):
            raise ApiError(400, "invalid_field", f"{field} must be a non-empty string", field=field)
    status = body.get("status")
    if status is not None and status not in JobStatus.__members__:
        raise ApiError(400, "invalid_field", f"status must be one of {', '.join(JobStatus.__members__)}", field="status")
    return body.get("version"), ResultFilters(condition=body.get("condition"), well=body.get("well"), status=status)


def chosen_version(experiment: Experiment, version: str | None) -> str:
    """The version asked for (404 unknown, 409 weights missing), else the project's active version."""
    settings = current_app.config["NUCLEUS_SETTINGS"]
    store = current_app.extensions["nucleus_store"]
    ensure_shipped_registered(settings, store)
    session = db()
    row = session.get(ModelVersion, version) if version else registry.active_version(session, experiment.project_id)
    if row is None:
        if version:
            raise ApiError(404, "model_not_found", f"no model version {version!r}")
        raise ApiError(409, "no_model_version", "no model version is registered yet; start the service's worker once")
    if not store.exists(row.object_key):
        raise ApiError(409, "model_weights_missing", f"the weights of {row.version} are missing from the object store")
    return row.version


def resegment(experiment: Experiment, version: str | None, filters: ResultFilters) -> dict:
    """Queue one job per matching image with `version` (default: the project's active one). Shared with
    the experiment page."""
    version = chosen_version(experiment, version)
    other_job, other_result = aliased(Job), aliased(Result)  # any of the image's, not its current job's
    busy = exists().where(other_job.image_id == Image.id, other_job.status.in_(OPEN))
    made = exists().where(other_result.image_id == Image.id, other_result.model_version == version)
    matching = experiment_query([Image.id], experiment, filters)
    with write_scope(current_app.config["NUCLEUS_SETTINGS"].resolved_database_url) as session:
        image_ids = session.scalars(matching.order_by(Image.created, Image.id)).all()
        wanted = set(session.scalars(matching.where(~busy, ~made)).all())
        job_ids = []
        for image_id in image_ids:
            if image_id in wanted:
                job = Job(image_id=image_id, status=JobStatus.queued, model_version=version)
                session.add(job)
                session.flush()
                job_ids.append(job.id)
    for job_id in job_ids:
        enqueue(job_id)
    log.info("experiment re-segmented", extra={"experiment": experiment.name, "model_version": version,
                                               "jobs": len(job_ids), "skipped": len(image_ids) - len(job_ids)})
    return {"experiment": experiment.name, "version": version, "jobs": len(job_ids),
            "skipped": len(image_ids) - len(job_ids), "job_ids": job_ids}


def version_counts(experiment: Experiment, filters: ResultFilters) -> list[dict]:
    """Per model version that segmented the experiment's (filtered) images: how many images, and their
    nuclei counts (each image's newest result from that version)."""
    newest = (select(func.max(Result.id)).join(Image, Image.id == Result.image_id)
              .where(Image.experiment_id == experiment.id).group_by(Result.image_id, Result.model_version))
    if filters.condition is not None:
        newest = newest.where(Image.condition == filters.condition)
    if filters.well is not None:
        newest = newest.where(Image.well == filters.well)
    query = (select(Result.model_version, func.count(), func.sum(Result.count), func.avg(Result.count),
                    func.min(Result.created), func.max(Result.created))
             .where(Result.id.in_(newest)).group_by(Result.model_version).order_by(func.min(Result.created)))
    return [{"model_version": version, "images": images, "count_total": int(total or 0),
             "count_mean": float(mean) if mean is not None else None, "first": iso(first), "last": iso(last)}
            for version, images, total, mean, first, last in db().execute(query)]
