"""What a segmentation is delivered as: a label TIFF, an overlay PNG, per-nucleus CSV rows."""
from __future__ import annotations

import csv
import io

import numpy as np

from shared.measure import COLUMNS

OUTLINE_RGB = (255, 220, 0)


def labels_tiff(labels: np.ndarray) -> bytes:
    """16-bit TIFF (32-bit above 65535 nuclei); 0 = background, one integer per nucleus."""
    import tifffile

    dtype = np.uint16 if labels.max() <= np.iinfo(np.uint16).max else np.uint32
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels.astype(dtype, copy=False), compression="zlib")
    return buffer.getvalue()


def overlay_rgb(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image, contrast-stretched to 8 bits, with each nucleus' outline drawn on it."""
    from skimage.segmentation import find_boundaries

    from shared.model.preprocess import normalize

    rgb = (np.clip(normalize(image).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    rgb[find_boundaries(labels, mode="inner")] = OUTLINE_RGB
    return rgb


def overlay_png(image: np.ndarray, labels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(overlay_rgb(image, labels)).save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def nuclei_csv(rows: list[dict], extra: dict | None = None) -> str:
    """One line per nucleus; `extra` adds constant leading columns (image_id, filename, condition...)."""
    extra = extra or {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*extra.keys(), *COLUMNS])
    for row in rows:
        writer.writerow([*extra.values(), *(_fmt(row[c]) for c in COLUMNS)])
    return buffer.getvalue()


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value
