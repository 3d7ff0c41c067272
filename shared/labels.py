"""Reading a scientist's corrected segmentation: a label image, or a zip of per-nucleus masks."""
from __future__ import annotations

import io
import zipfile

import numpy as np

from shared.imageio import ImageError, decode

MAX_MASKS = 20_000


def parse_label_upload(data: bytes, shape: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Bytes of a 16-bit PNG/TIFF label image (0 = background) or a zip of binary masks → uint32 labels.

    Raises ImageError (4xx) when the labels cannot belong to an image of `shape` or hold no nucleus.
    """
    if data[:4] == b"PK\x03\x04":
        labels = _from_mask_zip(data, shape, max_pixels)
    else:
        labels = decode(data, max_pixels=max_pixels)
        if labels.ndim == 3:
            if not (labels == labels[..., :1]).all():
                raise ImageError("a label image must have one channel (0 = background, 1..N = nuclei)", code="bad_labels")
            labels = labels[..., 0]
        if not np.issubdtype(labels.dtype, np.integer):
            raise ImageError("a label image must hold integers", code="bad_labels")
        if labels.min() < 0:
            raise ImageError("a label image must not hold negative values", code="bad_labels")
    if labels.shape != tuple(shape):
        raise ImageError(f"labels are {labels.shape[1]}x{labels.shape[0]} but the image is {shape[1]}x{shape[0]}",
                         code="bad_labels")
    if labels.max() == 0:
        raise ImageError("the label image holds no nucleus (all background)", code="bad_labels")
    return labels.astype(np.uint32)


def _from_mask_zip(data: bytes, shape: tuple[int, int], max_pixels: int) -> np.ndarray:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ImageError(f"not a readable zip of masks: {exc}", code="bad_labels") from exc
    names = sorted(n for n in archive.namelist() if not n.endswith("/") and not n.split("/")[-1].startswith("."))
    if not names:
        raise ImageError("the zip holds no mask files", code="bad_labels")
    if len(names) > MAX_MASKS:
        raise ImageError(f"the zip holds {len(names)} masks; at most {MAX_MASKS}", code="bad_labels")
    labels = np.zeros(shape, dtype=np.uint32)
    for i, name in enumerate(names, start=1):
        info = archive.getinfo(name)
        if info.file_size > max_pixels * 8:
            raise ImageError(f"mask {name} is too large", code="bad_labels")
        try:
            mask = decode(archive.read(name), max_pixels=max_pixels)
        except ImageError as exc:
            raise ImageError(f"mask {name}: {exc.message}", code="bad_labels") from exc
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != tuple(shape):
            raise ImageError(f"mask {name} is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}",
                             code="bad_labels")
        labels[mask > 0] = i
    return labels
