"""A label image (or one mask) whose size is read from its header and compared with the image's before decoding."""
from __future__ import annotations

import io
import struct

import numpy as np

from shared.domain.imaging.decoders import sniff_format

from shared.domain.imaging.errors import ImageError

from shared.domain.imaging.imageio import decode


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding pixels; None when the format is not an image."""
    kind = sniff_format(data)
    if kind is None:
        return None
    try:
        if kind == "png":
            if data[12:16] != b"IHDR" or len(data) < 24:
                raise ValueError("its IHDR header is missing")
            return struct.unpack(">II", data[16:24])
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:  # reads the first image directory only
                page = tif.pages.first
                return int(page.imagewidth), int(page.imagelength)
        return _jpeg_size(data)
    except Exception as exc:  # decoders raise many types for a corrupt header; all mean the same here
        raise ImageError(f"corrupt or truncated {kind.upper()} header: {exc}", code="corrupt_image") from None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            raise ValueError(f"no segment marker at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        (length,) = struct.unpack_from(">H", data, at + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack_from(">HH", data, at + 5)
            return width, height
        at += 2 + length
    raise ValueError("no start-of-frame segment")


def read_sized(data: bytes, shape: tuple[int, int], what: str) -> np.ndarray:
    """Bytes of a PNG/TIFF/JPEG of exactly `shape` → HxW or HxWxC array. The size is checked from the header, so
    a file declaring more pixels than the image costs nothing; decoding is bounded by the image's own pixels."""
    height, width = shape
    size = declared_size(data)
    if size is not None and tuple(size) != (width, height):
        raise ImageError(f"{what} is {size[0]}x{size[1]} but the image is {width}x{height}", code="bad_labels")
    array = decode(data, max_pixels=height * width)
    if array.shape[:2] != (height, width):
        raise ImageError(f"{what} is {array.shape[1]}x{array.shape[0]} but the image is {width}x{height}",
                         code="bad_labels")
    return array


def read_label_image(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """A label image (0 = background, 1..N = nuclei) → HxW integer array."""
    array = read_sized(data, shape, "the label image")
    if array.ndim == 3:
        if not all((array[..., c] == array[..., 0]).all() for c in range(1, array.shape[2])):
            raise ImageError("a label image must have one channel (0 = background, 1..N = nuclei)", code="bad_labels")
        array = np.ascontiguousarray(array[..., 0])  # the other channels are freed
    if not np.issubdtype(array.dtype, np.integer):
        raise ImageError("a label image must hold integers", code="bad_labels")
    if np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
        raise ImageError("a label image must not hold negative values", code="bad_labels")
    return array
