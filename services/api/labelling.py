"""Label images: a scientist's corrected segmentation of an uploaded image, training data for the next model.

The one place a label upload is accepted, for the JSON route and the pages alike.

A label upload (a label image, a zip of masks, an ImageJ RoiSet.zip or .roi, QuPath GeoJSON) of at most
settings.max_label_bytes is parsed in full against the image's shape (shared.domain.labels, which checks sizes from
headers before inflating anything), renumbered 1..N and stored normalised: a 16-bit PNG, or a 32-bit TIFF
above 65535 nuclei, at `labels/<image_id>/<sha256>.<ext>`, keyed by the hash of the normalised bytes. The
same labels for the same image again (whatever file they came in) are one row. A new label may start a
training run in its project (settings.auto_train_after_labels).
"""
from __future__ import annotations

import hashlib
import io
import logging

import numpy as np
from flask import Response, current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from services.api.access import visible
from services.api.database import db
from services.api.errors import ApiError
from services.api.queries import iso
from services.api.training_runs import start_run_if_enough_labels
from shared.infra.settings import Settings
from shared.infra.db.tables import Experiment, Image, Label
from shared.infra.db.session import session_scope
from shared.domain.imaging.errors import ImageError
from shared.infra.db.session import write_scope
from shared.domain.labels import parse_label_upload
from shared.infra.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

UINT16_MAX = np.iinfo(np.uint16).max
MIMETYPES = {"png": "image/png", "tif": "image/tiff"}
CHUNK_PIXELS = 1 << 20


def normalised(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 1..N in order of their old ids (0 stays background), and N.

    Worked through in chunks, so that the temporaries of sorting cost a chunk, not the whole image.
    """
    flat = labels.reshape(-1)
    starts = range(0, flat.size, CHUNK_PIXELS)
    ids = np.unique(np.concatenate([np.unique(flat[i:i + CHUNK_PIXELS]) for i in starts]))
    shift = 0 if ids[0] == 0 else 1  # no background pixel at all: every id moves up by one
    count = int(len(ids) - 1 + shift)
    renumbered = np.empty(flat.size, dtype=np.uint16 if count <= UINT16_MAX else np.uint32)
    for i in starts:
        renumbered[i:i + CHUNK_PIXELS] = np.searchsorted(ids, flat[i:i + CHUNK_PIXELS]) + shift
    return renumbered.reshape(labels.shape), count


def encode(labels: np.ndarray) -> tuple[bytes, str]:
    """(bytes, extension): a 16-bit PNG, or a 32-bit TIFF when the ids do not fit in 16 bits."""
    buffer = io.BytesIO()
    if labels.dtype == np.uint16:
        from PIL import Image as PILImage

        PILImage.fromarray(labels).save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    import tifffile

    tifffile.imwrite(buffer, labels.astype(np.uint32), compression="zlib")
    return buffer.getvalue(), "tif"


def label_json(label: Label, image: Image | None = None) -> dict:
    body = {"id": label.id, "image_id": label.image_id, "count": label.count, "sha256": label.sha256,
            "created": iso(label.created), "links": {"labels": f"/api/v1/labels/{label.id}/labels.png"}}
    if image is not None:
        body["filename"] = image.filename
    return body


def _read(upload: FileStorage | None, max_bytes: int) -> bytes:
    if upload is None:
        raise ApiError(400, "no_file", "send the label image in the multipart field 'file'")
    data = upload.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, "file_too_large", f"the label file is larger than the limit of {max_bytes} bytes "
                                              f"(NUCLEUS_MAX_LABEL_BYTES)")
    if not data:
        raise ApiError(400, "empty_file", "the label file is empty")
    return data


def accept_label(image: Image, upload: FileStorage | None, settings: Settings, store: ObjectStore) -> tuple[dict, bool]:
    """Validate, store and record one label upload for `image`. Returns (row, created)."""
    data = _read(upload, settings.max_label_bytes)
    try:
        labels = parse_label_upload(data, (image.height, image.width))
    except ImageError as exc:
        raise ApiError(exc.status, exc.code, f"labels for {image.filename}: {exc.message}") from None
    del data
    labels, count = normalised(labels)
    encoded, extension = encode(labels)
    del labels
    sha = hashlib.sha256(encoded).hexdigest()
    key = f"labels/{image.id}/{sha}.{extension}"
    if not store.exists(key):
        store.put(key, encoded, content_type=MIMETYPES[extension])
    same = select(Label).where(Label.image_id == image.id, Label.sha256 == sha)
    try:
        with write_scope(settings.resolved_database_url) as session:
            existing = session.scalars(same).first()
            if existing is not None:
                return label_json(existing), False
            label = Label(image_id=image.id, object_key=key, sha256=sha, count=count)
            session.add(label)
            session.flush()
            row = label_json(label)
    except IntegrityError:  # a concurrent upload of the same labels won the unique constraint
        with session_scope(settings.resolved_database_url) as session:
            return label_json(session.scalars(same).one()), False
    log.info("labels stored", extra={"image_id": image.id, "label_id": row["id"], "count": count})
    return row, True


def _label(label_id: str) -> tuple[Label, Image]:
    query = visible(select(Label, Image).join(Image, Image.id == Label.image_id)
                    .join(Experiment, Experiment.id == Image.experiment_id).where(Label.id == label_id))
    found = db().execute(query).first()
    if found is None:
        raise ApiError(404, "label_not_found", f"no label {label_id!r}")
    return found[0], found[1]


def label_file(label_id: str) -> Response:
    """The stored label image (shared with the pages)."""
    label, image = _label(label_id)
    try:
        data = current_app.extensions["nucleus_store"].get(label.object_key)
    except ObjectNotFound:
        raise ApiError(404, "object_missing", f"label {label.id} is missing from the object store") from None
    extension = label.object_key.rsplit(".", 1)[-1]
    stem = image.filename.rsplit(".", 1)[0].encode("ascii", "replace").decode().replace('"', "_")
    return Response(data, mimetype=MIMETYPES.get(extension, "application/octet-stream"),
                    headers={"Content-Disposition": f'attachment; filename="{stem}_labels.{extension}"'})


def labels_of_image(image: Image) -> list[dict]:
    rows = db().scalars(select(Label).where(Label.image_id == image.id).order_by(Label.created.desc())).all()
    return [label_json(label, image) for label in rows]


def accept_label_and_maybe_train(image: Image, upload: FileStorage | None) -> tuple[dict, bool]:
    """Accept one label upload for `image` (see accept_label); a new label may start a training run in
    its project. Returns (row, created)."""
    settings: Settings = current_app.config["NUCLEUS_SETTINGS"]
    row, created = accept_label(image, upload, settings, current_app.extensions["nucleus_store"])
    if created:
        start_run_if_enough_labels(settings)
    return row, created
