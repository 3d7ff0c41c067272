"""Images: metadata and status, the result, and its files."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from services.api.access import get_image, require_role
from services.api.database import db
from services.api.downloads import ARTIFACTS, CONVERTED_LINKS, artifact_response, finished_result
from services.api.errors import ApiError
from services.api.queries import count_rows, iso, page_from_request, result_for
from services.api.rest import api
from shared.infra.db.tables import Result


def image_json(image, job) -> dict:
    return {
        "id": image.id, "experiment": image.experiment.name, "filename": image.filename, "sha256": image.sha256,
        "width": image.width, "height": image.height, "size_bytes": image.size_bytes,
        "condition": image.condition, "well": image.well, "plate": image.plate, "site": image.site,
        "channel": image.channel, "pixel_size_um": image.pixel_size_um, "extra": image.extra or {},
        "created": iso(image.created),
        "job_id": job.id if job else None, "status": job.status.value if job else None,
        "error": job.error if job else None,
    }


def result_links(image_id: str) -> dict:
    base = f"/api/v1/images/{image_id}"
    return {"labels": f"{base}/labels.tif", "overlay": f"{base}/overlay.png", "nuclei_csv": f"{base}/nuclei.csv",
            **{link: f"{base}/{name}" for link, name in CONVERTED_LINKS.items()}}


@api.get("/images/<image_id>")
def show_image(image_id: str):
    require_role("viewer")
    image = get_image(image_id)
    job, result = result_for(db(), image)
    body = image_json(image, job)
    body["count"] = result.count if result else None
    body["model_version"] = result.model_version if result else None
    return jsonify(body)


def result_json(image, result) -> dict:
    return {
        "image_id": image.id, "job_id": result.job_id, "count": result.count, "model_version": result.model_version,
        "area": {"mean": result.area_mean, "median": result.area_median, "min": result.area_min,
                 "max": result.area_max},
        "seconds_model": result.seconds_model, "seconds_total": result.seconds_total,
        "created": iso(result.created),
        "links": result_links(image.id),
    }


@api.get("/images/<image_id>/result")
def image_result(image_id: str):
    """The image's newest result, or with ?version= the newest one that version made."""
    require_role("viewer")
    image = get_image(image_id)
    version = request.args.get("version") or None
    if version is None:
        return jsonify(result_json(image, finished_result(db(), image)))
    _job, result = result_for(db(), image, version)
    if result is None:
        raise ApiError(404, "result_not_found", f"image {image.id} has no result made by {version!r}")
    return jsonify(result_json(image, result))


@api.get("/images/<image_id>/results")
def image_results(image_id: str):
    """Every result of the image, newest first: one per model version it was segmented with."""
    require_role("viewer")
    image = get_image(image_id)
    page = page_from_request()
    query = select(Result).where(Result.image_id == image.id)
    total = count_rows(db(), query)
    rows = db().scalars(query.order_by(Result.id.desc()).offset(page.offset).limit(page.per_page)).all()
    return jsonify(page.body("results", [result_json(image, r) for r in rows], total))


@api.get("/images/<image_id>/<any(" + ", ".join(f'"{a}"' for a in ARTIFACTS) + "):artifact>")
def image_artifact(image_id: str, artifact: str):
    require_role("viewer")
    return artifact_response(db(), get_image(image_id), artifact)
