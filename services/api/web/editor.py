"""What the image page's label editor loads: the uploaded image as an 8-bit PNG a browser can draw, and
the labels it starts from (the image's newest label, else its result) as raw little-endian uint32 ids.

A 16-bit PNG is awkward to read back exactly in a browser (a canvas gives 8 bits per channel), so the
ids travel raw and gzip-compressed; a label map compresses to a few percent of its raw size.
"""
from __future__ import annotations

import gzip
import io

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.errors import ApiError
from services.api.queries import result_for
from shared.infra.settings import Settings
from shared.infra.db.tables import Image, Label
from shared.domain.imaging.imageio import decode
from shared.infra.storage import ObjectNotFound, ObjectStore

# Above this many pixels the editor's buffers (ids, their colours, the image) outgrow a browser tab.
EDITOR_MAX_PIXELS = 4096 * 4096


def editable(image: Image) -> bool:
    return image.width * image.height <= EDITOR_MAX_PIXELS


def _check_editable(image: Image) -> None:
    if not editable(image):
        raise ApiError(413, "too_large_to_edit", f"{image.width}x{image.height} is more than the browser editor's "
                       f"{EDITOR_MAX_PIXELS} pixels; upload a corrected label image instead")


def _get(store: ObjectStore, key: str, what: str) -> bytes:
    try:
        return store.get(key)
    except ObjectNotFound:
        raise ApiError(404, "object_missing", f"{what} is missing from the object store") from None


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """An image contrast-stretched to 8 bits exactly as shared.domain.model.preprocess.normalize stretches it (the overlay's
    look): HxW for grey, HxWx3 for colour."""
    from shared.domain.model.preprocess import HIGH_PERCENTILE, LOW_PERCENTILE, normalize

    if pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint16):
        # normalize's own limits and arithmetic, through a table of every level: a 4096² grey image takes a
        # fraction of a second instead of three float32 planes
        sample = pixels[:: max(1, pixels.shape[0] // 512), :: max(1, pixels.shape[1] // 512)].astype(np.float32)
        lo, hi = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
        if hi - lo < 1e-6:
            hi = lo + 1.0
        levels = np.arange(np.iinfo(pixels.dtype).max + 1, dtype=np.float32)
        table = (np.clip(((levels - lo) / (hi - lo)).astype(np.float32), 0, 1) * 255).astype(np.uint8)
        return table[pixels]
    rgb = (np.clip(normalize(pixels).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    return rgb[..., 0] if (rgb == rgb[..., :1]).all() else rgb


def display_png(image: Image, settings: Settings, store: ObjectStore) -> bytes:
    """The uploaded image (its analysed channel) as the editor draws it."""
    from PIL import Image as PILImage

    _check_editable(image)
    pixels = decode(_get(store, image.object_key, f"the upload of image {image.id}"), channel=image.channel,
                    max_pixels=settings.max_pixels)
    buffer = io.BytesIO()
    PILImage.fromarray(display_pixels(pixels)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def starting_labels(session: Session, image: Image, settings: Settings, store: ObjectStore) -> tuple[np.ndarray, str]:
    """(HxW uint32 ids, where they came from: "label <id>", "result" or "empty")."""
    _check_editable(image)
    label = session.scalars(select(Label).where(Label.image_id == image.id)
                            .order_by(Label.created.desc(), Label.id.desc())).first()
    if label is not None:
        key, source = label.object_key, f"label {label.id}"
    else:
        _job, result = result_for(session, image)
        if result is None:
            return np.zeros((image.height, image.width), dtype=np.uint32), "empty"
        key, source = result.labels_key, "result"
    labels = decode(_get(store, key, f"the {source} of image {image.id}"), max_pixels=settings.max_pixels)
    if labels.ndim == 3:
        labels = labels[..., 0]
    if labels.shape != (image.height, image.width):
        raise ApiError(409, "labels_mismatch", f"the stored {source} is {labels.shape[1]}x{labels.shape[0]}, "
                       f"the image {image.width}x{image.height}")
    return labels.astype(np.uint32), source


def raw_ids_gzip(labels: np.ndarray) -> bytes:
    return gzip.compress(labels.astype("<u4", copy=False).tobytes(), compresslevel=1)
