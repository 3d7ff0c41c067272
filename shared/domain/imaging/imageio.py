"""Decode microscope images from bytes, refusing anything that is not a whole, sane image.

PNG, JPEG and TIFF (8/16-bit, multi-page, OME-TIFF, multi-channel). The declared size is checked
before any pixel is decoded, so a decompression bomb costs nothing; the whole image is then
decoded, so a truncated file is refused here and not later by a worker.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from shared.domain.imaging.decoders import DEFAULT_MAX_PIXELS, decode_pillow, decode_tiff, sniff_format
from shared.domain.imaging.errors import ImageError, ImageTooLarge
from shared.domain.imaging.read_options import ReadOptions
from shared.domain.imaging.reading import read_picture
from shared.domain.imaging.vendor_formats import sniff


def decode(data: bytes, channel: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes → HxW (grey) or HxWx3 (colour) array of the file's own dtype."""
    if not data:
        raise ImageError("the file is empty", code="empty_file")
    kind = sniff_format(data)
    if kind is None:
        return _decode_vendor(data, channel, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = decode_tiff(data, channel, max_pixels) if kind == "tiff" else decode_pillow(data, channel, max_pixels)
    except ImageError:
        raise
    except (MemoryError, OverflowError) as exc:
        raise ImageTooLarge(f"image too large to decode: {exc}") from exc
    except Exception as exc:  # decoders raise many types for corrupt input; all mean the same here
        raise ImageError(f"corrupt or truncated {kind.upper()}: {exc}".strip(), code="corrupt_image") from exc
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ImageError(f"unsupported pixel type {image.dtype}", code="unsupported_format")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    return image


def _decode_vendor(data: bytes, channel: int | None, max_pixels: int) -> np.ndarray:
    """A CZI, ND2 or LIF file through shared.domain.imaging.reading: the given channel, Z max-projected, the first time point
    and scene (an upload's own choices are applied where its Image row is at hand: services.worker.pipeline)."""
    if sniff(data[:16]) is None:
        raise ImageError("not an image: expected PNG, JPEG or TIFF (or CZI, ND2, LIF)", code="unsupported_format")
    return read_picture(data, ReadOptions(channel=channel), max_pixels=max_pixels).nuclear


def read_image(path: str | Path, channel: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return decode(Path(path).read_bytes(), channel=channel, max_pixels=max_pixels)


def read_labels(path: str | Path) -> np.ndarray:
    """A label image (0 = background) as an integer array."""
    labels = read_image(path)
    if labels.ndim == 3:
        labels = labels[..., 0]
    if not np.issubdtype(labels.dtype, np.integer):
        raise ImageError("a label image must hold integers", code="bad_labels")
    return labels.astype(np.uint32)
