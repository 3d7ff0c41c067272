"""Accepting uploaded images: validate every file, then store bytes, rows and queue messages.

Nothing from a request is stored unless every file in it decodes. The bytes live once at
`uploads/<sha256>`; the unique (experiment, sha256) constraint decides, even under concurrent
uploads, that the same bytes in the same experiment are one image with one job.
"""
from __future__ import annotations

import hashlib
import logging
import re
import os
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage, MultiDict

from services.api.errors import ApiError
from shared.infra.settings import Settings
from shared.infra.db.tables import Experiment, Image, Job, JobStatus
from shared.infra.db.session import session_scope
from shared.domain.imaging.errors import ImageError
from shared.domain.imaging.read_options import (ReadOptions, check_pixel_size, parse_channel, parse_index, parse_scene,
                                 parse_z)
from shared.domain.imaging.reading import read_picture
from shared.domain.segmentation.tiled import decoded_bytes, refusal as worker_refusal
from shared.infra.db.session import write_scope
from shared.infra.storage import ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

TEXT_FIELDS = {"condition": 200, "well": 20, "plate": 200, "site": 20}
# How to read each file: the nuclear channel (name or index), Z ('max' or a plane), T, scene, pixel size.
READING_FIELDS = ("channel", "z", "t", "scene", "pixel_size_um")
KNOWN_FIELDS = {*TEXT_FIELDS, *READING_FIELDS, "file", "csrf_token"}
# Other form fields (e.g. an ingester's `instrument_channel`) are kept as free metadata.
EXTRA_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_EXTRA_FIELDS, MAX_EXTRA_LENGTH = 20, 200


@dataclass
class Metadata:
    condition: str | None = None
    well: str | None = None
    plate: str | None = None
    site: str | None = None
    reading: ReadOptions = field(default_factory=ReadOptions)
    extra: dict = field(default_factory=dict)


@dataclass
class CheckedFile:
    filename: str
    upload: FileStorage
    sha256: str
    size: int
    width: int
    height: int
    channel: int | None           # index of the nuclear channel (None: an RGB photo segmented as colour)
    channel_names: list[str]
    pixel_size_um: float | None   # the given one, else the file's
    reading: dict                 # how it was read (channel_name, z, t, scene), kept in Image.extra


def _text_field(form: MultiDict, name: str, limit: int) -> str | None:
    value = (form.get(name) or "").strip()
    if len(value) > limit:
        raise ApiError(400, "invalid_field", f"{name} is longer than {limit} characters", field=name)
    if any(ord(ch) < 32 for ch in value):
        raise ApiError(400, "invalid_field", f"{name} holds control characters", field=name)
    return value or None


def parse_metadata(form: MultiDict) -> Metadata:
    meta = Metadata()
    for name, limit in TEXT_FIELDS.items():
        setattr(meta, name, _text_field(form, name, limit))
    extra_names = [n for n in form.keys() if n not in KNOWN_FIELDS]
    if len(extra_names) > MAX_EXTRA_FIELDS:
        raise ApiError(400, "invalid_field", f"at most {MAX_EXTRA_FIELDS} extra metadata fields")
    for name in extra_names:
        if not EXTRA_FIELD_NAME.match(name):
            raise ApiError(400, "invalid_field", f"metadata field names are lower-case words: {name[:40]!r}", field=name)
        value = _text_field(form, name, MAX_EXTRA_LENGTH)
        if value is not None:
            meta.extra[name] = value
    meta.reading = parse_reading(form)
    return meta


def parse_reading(form: MultiDict) -> ReadOptions:
    fields = {name: (form.get(name) or "").strip() for name in READING_FIELDS}
    parsers = {"channel": parse_channel, "z": parse_z, "t": lambda v: parse_index("t", v, 0), "scene": parse_scene,
               "pixel_size_um": check_pixel_size}
    values = {}
    for name, parse in parsers.items():
        try:
            values[name] = parse(fields[name])
        except ImageError as exc:
            raise ApiError(400, "invalid_field", f"{name}: {exc.message}", field=name) from None
    return ReadOptions(**values)


def clean_filename(raw: str | None) -> str:
    name = os.path.basename((raw or "").replace("\\", "/")).strip()
    name = "".join(ch for ch in name if ord(ch) >= 32)
    if name in ("", ".", ".."):
        return "upload"
    return name[:500]


def _read_and_hash(upload: FileStorage, filename: str, max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes and their SHA-256. The size is known from the spooled upload before reading, so
    the bytes are read in one piece of exactly that size and held once."""
    stream = upload.stream
    size = stream.seek(0, os.SEEK_END)
    if size > max_bytes:
        raise ApiError(413, "file_too_large", f"{filename}: larger than the limit of {max_bytes} bytes",
                       filename=filename)
    stream.seek(0)
    data = stream.read(size)
    return data, hashlib.sha256(data).hexdigest()


class TooLargeForWorker(ImageError):
    status = 413

    def __init__(self, message: str):
        super().__init__(message, code="image_too_large_for_worker")


def worker_budget(settings: Settings):
    """A check of a picture's arrays against the worker-memory budget: read_picture's `admit`, which sees them
    from the file's header before any pixel is decoded, and again on the decoded arrays (a few images hold more
    than their header tells, such as bilevel ones, decoded as bytes)."""
    def admit(nuclear: np.ndarray, channels: np.ndarray) -> None:
        too_big = worker_refusal(*nuclear.shape[:2], decoded_bytes(nuclear, channels), settings)
        if too_big:
            raise TooLargeForWorker(too_big)
    return admit


def check_files(uploads: list[FileStorage], meta: Metadata, settings: Settings) -> list[CheckedFile]:
    """Decode every file in full, once its header shows it within the limits; the first bad one refuses the whole
    request, naming the file."""
    if not uploads:
        raise ApiError(400, "no_files", "send one or more images in the multipart field 'file'")
    checked, admit = [], worker_budget(settings)
    for upload in uploads:
        filename = clean_filename(upload.filename)
        data, sha = _read_and_hash(upload, filename, settings.max_upload_bytes)
        try:
            picture = read_picture(data, meta.reading, max_pixels=settings.max_pixels, filename=filename, admit=admit)
            admit(picture.nuclear, picture.channels)
        except ImageError as exc:
            raise ApiError(exc.status, exc.code, f"{filename}: {exc.message}", filename=filename) from None
        checked.append(CheckedFile(filename, upload, sha, len(data), width=picture.nuclear.shape[1],
                                   height=picture.nuclear.shape[0], channel=picture.channel,
                                   channel_names=picture.channel_names, pixel_size_um=picture.pixel_size_um,
                                   reading=picture.record()))
        del picture, data
    return checked


def store_bytes(store: ObjectStore, files: list[CheckedFile]) -> None:
    for item in files:
        key = f"uploads/{item.sha256}"
        if store.exists(key):
            continue
        item.upload.stream.seek(0)
        try:
            store.put(key, item.upload.stream.read())
        except StorageUnavailable:
            # Keys are content hashes: if a concurrent upload of the same bytes got there first, the
            # object is the one we meant to write (some S3 servers refuse concurrent writes to a key).
            if not store.exists(key):
                raise


def _existing(session: Session, experiment_id: int, sha256: str) -> tuple[Image, Job] | None:
    """The image of these bytes in the experiment and its newest job (a re-segmentation adds jobs): the
    job an image's history shows."""
    found = session.execute(select(Image, Job).join(Job, Job.image_id == Image.id)
                            .where(Image.experiment_id == experiment_id, Image.sha256 == sha256)
                            .order_by(Job.created.desc(), Job.id.desc()).limit(1)).first()
    return (found[0], found[1]) if found else None


def _row(image: Image, job: Job, duplicate: bool) -> dict:
    return {"id": image.id, "job_id": job.id, "sha256": image.sha256, "status": job.status.value,
            "duplicate": duplicate, "filename": image.filename}


def record_image(database_url: str, experiment_id: int, item: CheckedFile, meta: Metadata) -> tuple[dict, bool]:
    """Image and Job rows in one write transaction. Returns (row, created)."""
    try:
        with write_scope(database_url) as session:
            found = _existing(session, experiment_id, item.sha256)
            if found:
                return _row(*found, duplicate=True), False
            image = Image(experiment_id=experiment_id, sha256=item.sha256, object_key=f"uploads/{item.sha256}",
                          filename=item.filename, width=item.width, height=item.height, size_bytes=item.size,
                          condition=meta.condition, well=meta.well, plate=meta.plate, site=meta.site,
                          channel=item.channel, pixel_size_um=item.pixel_size_um,
                          channel_names=list(item.channel_names), extra={**meta.extra, **item.reading})
            session.add(image)
            session.flush()
            job = Job(image_id=image.id, status=JobStatus.queued)
            session.add(job)
            session.flush()
            row = _row(image, job, duplicate=False)
        return row, True
    except IntegrityError:
        # a concurrent upload of the same bytes won the race: answer with its rows
        with session_scope(database_url) as session:
            found = _existing(session, experiment_id, item.sha256)
            if found is None:
                raise
            return _row(*found, duplicate=True), False


def enqueue(job_id: str) -> None:
    """Publish after commit. If the broker is down the job stays queued in SQL; the sweeper sends it later."""
    from shared.infra.queue import enqueue_segment

    try:
        enqueue_segment(job_id)
    except Exception as exc:  # any broker fault: the SQL row is the truth and the sweeper repairs delivery
        log.warning("could not enqueue job %s, the sweeper will: %s", job_id, exc, extra={"job_id": job_id})


def accept_upload(experiment: Experiment, uploads: list[FileStorage], form: MultiDict,
                  settings: Settings, store: ObjectStore) -> tuple[list[dict], bool]:
    """The whole intake. Returns the rows to answer with and whether anything new was accepted."""
    meta = parse_metadata(form)
    files = check_files(uploads, meta, settings)
    store_bytes(store, files)
    rows, new_jobs = [], []
    for item in files:
        row, created = record_image(settings.resolved_database_url, experiment.id, item, meta)
        rows.append(row)
        if created:
            new_jobs.append(row["job_id"])
    for job_id in new_jobs:
        enqueue(job_id)
    return rows, bool(new_jobs)
