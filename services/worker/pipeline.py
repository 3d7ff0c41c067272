"""One segmentation job, from stored bytes to result rows.

Order matters for crash safety: claim the job, compute, write the result objects (idempotent keys
under results/<job_id>/, so a crash leaves only objects the next attempt overwrites), then record
the result, its nuclei and `done` in one transaction.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from shared.infra import jobs
from shared.infra.settings import get_settings
from shared.domain.imaging.errors import ImageError
from shared.infra.storage import ObjectNotFound, StorageUnavailable, get_store

from services.worker.metrics import observe_result

log = logging.getLogger(__name__)


class PermanentFailure(Exception):
    """The job cannot succeed however often it is retried (a bad image, missing bytes)."""


def is_transient(exc: BaseException) -> bool:
    """Faults worth a retry: the object store or the database briefly out of reach."""
    if isinstance(exc, (StorageUnavailable, OperationalError, DisconnectionError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass
class Outcome:
    status: str  # done | failed | skipped | duplicate
    detail: str = ""


def result_keys(job_id: str) -> dict[str, str]:
    base = f"results/{job_id}"
    return {"labels_key": f"{base}/labels.tif", "overlay_key": f"{base}/overlay.png",
            "nuclei_csv_key": f"{base}/nuclei.csv"}


def process(job_id: str, worker: str, takeover: bool = False) -> Outcome:
    """Run one delivery of a job. Transient faults propagate (the task retries); anything that will
    never work marks the job failed with its reason."""
    settings = get_settings()
    claimed = jobs.claim(job_id, worker, settings.job_lease_seconds, takeover=takeover)
    if claimed is None:
        log.info("job not claimable (finished, unknown, or leased to another worker); skipping")
        return Outcome("skipped")
    log.info("job claimed", extra={"attempt": claimed.attempts, "worker": worker})
    try:
        with jobs.held_lease(job_id, worker, settings.job_lease_seconds, settings.job_max_seconds):
            result, nuclei = compute(claimed)
    except PermanentFailure as exc:
        jobs.fail(job_id, str(exc))
        log.warning("job failed", extra={"reason": str(exc)})
        return Outcome("failed", str(exc))
    except Exception as exc:
        if is_transient(exc):
            raise
        # a poison input that breaks the model or the measurements fails alone, with its reason
        log.exception("job failed with an unexpected error")
        reason = f"processing failed: {type(exc).__name__}: {exc}"
        jobs.fail(job_id, reason)
        return Outcome("failed", reason)
    if not jobs.complete(job_id, result, nuclei):
        log.info("job was already finished by another delivery; nothing written")
        return Outcome("duplicate")
    observe_result(result)
    log.info("job done", extra={"count": result["count"], "model_version": result["model_version"],
                                "seconds_model": round(result["seconds_model"], 3),
                                "seconds_total": round(result["seconds_total"], 3)})
    return Outcome("done")


def compute(job: jobs.ClaimedJob) -> tuple[dict, list[dict]]:
    from shared.domain.measurement import area_summary, measure_columns, measure_nuclei
    from shared.domain.imaging.read_options import channel_columns
    from shared.domain.outputs import labels_tiff, nuclei_csv, overlay_png
    from shared.domain.segmentation.tiled import overlay_view, segment_and_measure
    from services.worker.model_cache import VersionUnavailable, model_cache

    started = time.perf_counter()
    settings = get_settings()
    store = get_store()
    try:
        data = store.get(job.object_key)
    except ObjectNotFound:
        raise PermanentFailure(f"the uploaded file is missing from the object store ({job.object_key})") from None
    picture = read_as_uploaded(data, job.image_id, settings)
    image = picture.nuclear

    try:
        segmenter = model_cache().current(job.job_id)  # this task keeps this model even if another becomes active
    except VersionUnavailable as exc:
        raise PermanentFailure(str(exc)) from None
    suffixes = channel_columns(picture.channel_names)

    def measure(found, box):  # the nuclei in `found`, a crop of the image at `box` (the whole image when small)
        channels = None if picture.channels is None else picture.channels[box]
        return measure_nuclei(found, image[box], channels, suffixes, picture.pixel_size_um)

    model_started = time.perf_counter()
    labels, rows = segment_and_measure(segmenter, image, measure, picture.pixel_size_um,
                                       settings.whole_image_max_pixels)
    seconds_model = time.perf_counter() - model_started
    measured = measure_columns(suffixes, picture.pixel_size_um)
    areas = area_summary(rows)
    keys = result_keys(job.job_id)
    extra = {"image_id": job.image_id, "filename": job.filename, "condition": job.condition or "",
             "well": job.well or ""}
    store.put(keys["labels_key"], labels_tiff(labels), content_type="image/tiff")
    store.put(keys["overlay_key"], overlay_png(*overlay_view(image, labels)), content_type="image/png")
    store.put(keys["nuclei_csv_key"], nuclei_csv(rows, extra, measured).encode(), content_type="text/csv")
    result = {"image_id": job.image_id, "model_version": segmenter.version, "count": len(rows),
              "area_mean": areas["mean"], "area_median": areas["median"], "area_min": areas["min"],
              "area_max": areas["max"], "seconds_model": seconds_model,
              "seconds_total": time.perf_counter() - started, "measure_columns": measured, **keys}
    return result, rows


def read_as_uploaded(data: bytes, image_id: str, settings):
    """The file read as its upload chose (nuclear channel, Z, T, scene, pixel size: the Image row keeps them).
    An image recorded before channels were named (no channel_names) and with no channel chosen is read as it
    was then: its first channel."""
    from sqlalchemy import select

    from shared.infra.db.tables import Image
    from shared.infra.db.session import session_scope
    from shared.domain.imaging.read_options import OptionError, ReadOptions, parse_index, parse_scene, parse_z
    from shared.domain.imaging.reading import read_picture

    with session_scope() as session:
        channel, pixel_size, names, extra = session.execute(
            select(Image.channel, Image.pixel_size_um, Image.channel_names, Image.extra).where(Image.id == image_id)
        ).one()
    extra = extra or {}
    try:
        options = ReadOptions(channel=channel, z=parse_z(extra.get("z")), t=parse_index("t", extra.get("t"), 0),
                              scene=parse_scene(extra.get("scene")), pixel_size_um=pixel_size)
        try:
            return read_picture(data, options, max_pixels=settings.max_pixels)
        except OptionError as exc:
            if exc.code != "channel_required" or names:
                raise
            return read_picture(data, replace(options, channel=0), max_pixels=settings.max_pixels)
    except ImageError as exc:
        raise PermanentFailure(f"{exc.code}: {exc.message}") from None
