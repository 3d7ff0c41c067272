"""Jobs: where an image's segmentation stands."""
from __future__ import annotations

from flask import jsonify
from sqlalchemy import select

from services.api.access import require_role, visible
from services.api.database import db
from services.api.errors import ApiError
from services.api.queries import iso
from services.api.rest import api
from shared.infra.db.tables import Experiment, Image, Job


@api.get("/jobs/<job_id>")
def show_job(job_id: str):
    require_role("viewer")
    query = visible(select(Job).join(Image, Image.id == Job.image_id)
                    .join(Experiment, Experiment.id == Image.experiment_id).where(Job.id == job_id))
    job = db().scalars(query).first()
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return jsonify({"id": job.id, "status": job.status.value, "image_id": job.image_id, "error": job.error,
                    "attempts": job.attempts, "model_version": job.model_version,
                    "created": iso(job.created),
                    "started": iso(job.started),
                    "finished": iso(job.finished)})
