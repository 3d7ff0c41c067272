"""One multi-channel OME-TIFF from an instrument's per-channel files of one field.

The channels are named by the instrument's labels (`ch1`, `ch2` / `w1`, `w2`), so the server finds
the nuclear one by name and names each channel's measurements after it. The bytes depend only on the
pixels, the labels and the pixel size (the OME UUID is derived from them): the same field stacked
again gives the same sha256, so an upload repeated after a lost answer is a duplicate on the server.
"""
from __future__ import annotations

import hashlib
import io
import re
import uuid

import numpy as np


class StackError(ValueError):
    """The field's files cannot make one image (unreadable, not one grey plane, different sizes)."""


def read_plane(name: str, data: bytes) -> tuple[np.ndarray, float | None]:
    """A channel file's single grey plane and its pixel size in µm (None when the file does not say)."""
    if name.lower().endswith((".tif", ".tiff")):
        import tifffile

        try:
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                plane = tif.series[0].asarray()
                pixel_size = _tiff_pixel_size(tif)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means the same to the user
            raise StackError(f"{name}: not a readable TIFF ({exc})") from None
    else:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                plane = np.asarray(image.convert("I;16") if image.mode == "I" else image)
        except Exception as exc:  # noqa: BLE001
            raise StackError(f"{name}: not a readable image ({exc})") from None
        pixel_size = None
    plane = np.squeeze(plane)
    if plane.ndim != 2:
        raise StackError(f"{name}: holds {plane.shape} pixels, not one grey plane per channel file")
    return plane, pixel_size


def stack_channels(channels: list[tuple[str, str, bytes]]) -> bytes:
    """`channels`: (label, file name, bytes) in channel order → the OME-TIFF's bytes."""
    planes, pixel_size = [], None
    for label, name, data in channels:
        plane, size = read_plane(name, data)
        if planes and plane.shape != planes[0].shape:
            raise StackError(f"{name} ({label}) is {plane.shape[1]}x{plane.shape[0]} pixels, the field's "
                             f"{channels[0][0]} is {planes[0].shape[1]}x{planes[0].shape[0]}")
        planes.append(plane)
        pixel_size = pixel_size or size
    dtype = np.result_type(*planes)
    stack = np.stack([p.astype(dtype, copy=False) for p in planes])
    labels = [label for label, _, _ in channels]

    digest = hashlib.sha256()
    digest.update(repr((stack.shape, str(stack.dtype), labels, pixel_size)).encode())
    digest.update(np.ascontiguousarray(stack).data)
    metadata = {"axes": "CYX", "Channel": {"Name": labels}, "UUID": f"urn:uuid:{uuid.UUID(bytes=digest.digest()[:16])}"}
    if pixel_size:
        metadata.update(PhysicalSizeX=pixel_size, PhysicalSizeXUnit="µm", PhysicalSizeY=pixel_size,
                        PhysicalSizeYUnit="µm")
    import tifffile

    buffer = io.BytesIO()
    # Uncompressed, as instruments write their channel files: zlib costs more time than it saves in transfer
    tifffile.imwrite(buffer, stack, ome=True, photometric="minisblack", metadata=metadata)
    return buffer.getvalue()


def _tiff_pixel_size(tif) -> float | None:
    """From OME metadata (PhysicalSizeX in µm), else a resolution in pixels per centimetre."""
    if tif.is_ome and tif.ome_metadata:
        found = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if found and (unit is None or unit.group(1) in ("µm", "um", "\u03bcm")):
            value = float(found.group(1))
            return value if value > 0 else None
    tags = tif.pages[0].tags
    if "XResolution" in tags and "ResolutionUnit" in tags and int(tags["ResolutionUnit"].value) == 3:
        numerator, denominator = tags["XResolution"].value
        if numerator and denominator:
            return 1e4 * denominator / numerator
    return None
