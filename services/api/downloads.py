"""Result files served from the object store: one place for the key lookup, used by the API and the pages."""
from __future__ import annotations

from flask import Response, current_app
from sqlalchemy.orm import Session

from services.api.errors import ApiError
from services.api.queries import result_for
from shared.db.models import Image, JobStatus, Result
from shared.storage import ObjectNotFound

ARTIFACTS = {
    "labels.tif": ("labels_key", "image/tiff"),
    "overlay.png": ("overlay_key", "image/png"),
    "nuclei.csv": ("nuclei_csv_key", "text/csv"),
}


def finished_result(session: Session, image: Image) -> Result:
    """The image's result, or 409 saying why there is none yet."""
    job, result = result_for(session, image)
    if result is not None:
        return result
    status = job.status.value if job else "unknown"
    if job is not None and job.status == JobStatus.failed:
        raise ApiError(409, "job_failed", f"segmenting this image failed: {job.error or 'no reason recorded'}",
                       status=status)
    raise ApiError(409, "not_ready", f"no result yet: the job is {status}", status=status)


def artifact_response(session: Session, image: Image, artifact: str) -> Response:
    if artifact not in ARTIFACTS:
        raise ApiError(404, "not_found", f"no file {artifact!r}; there are {', '.join(ARTIFACTS)}")
    attribute, mimetype = ARTIFACTS[artifact]
    result = finished_result(session, image)
    try:
        data = current_app.extensions["nucleus_store"].get(getattr(result, attribute))
    except ObjectNotFound:
        raise ApiError(404, "object_missing", f"{artifact} of image {image.id} is missing from the object store") from None
    stem = image.filename.rsplit(".", 1)[0].encode("ascii", "replace").decode().replace('"', "_")
    return Response(data, mimetype=mimetype,
                    headers={"Content-Disposition": f'inline; filename="{stem}_{artifact}"',
                             "Cache-Control": "private, max-age=3600"})
