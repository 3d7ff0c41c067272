"""ImageJ/Fiji ROIs (a RoiSet.zip from the ROI Manager, or one .roi file), each area ROI one nucleus (roifile).

Polygon, freehand, traced, rectangle, oval and composite (shape) ROIs outline nuclei; a rectangle with rounded
corners is filled as a rectangle, and a ROI's stack position is not looked at. Lines, points, text and
arrows are refused by name, since they outline nothing.
"""
from __future__ import annotations

import numpy as np

from shared.domain.imaging.errors import ImageError
from shared.domain.labels import archive
from shared.domain.labels.errors import LabelsTooLarge, bad_labels
from shared.domain.labels.raster import Outlines

ROI_MAGIC = b"Iout"


def roi_entry_limit(shape: tuple[int, int]) -> int:
    """The most bytes one ROI file may hold: 64 KiB (some 5 000 points at sub-pixel precision), or one byte per
    two pixels of the image; a point costs about 150 bytes while its outline is filled."""
    return max(64 << 10, shape[0] * shape[1] // 2)


def is_roi(data: bytes) -> bool:
    return data[:4] == ROI_MAGIC


def is_roi_name(name: str) -> bool:
    return name.lower().endswith(".roi")


def from_roi(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    if len(data) > roi_entry_limit(shape):
        raise LabelsTooLarge(f"the ROI file holds {len(data)} bytes; for this image at most {roi_entry_limit(shape)}")
    outlines = Outlines(shape, "ROI")
    _add(outlines, data, "in the file")
    return outlines.labels


def from_roiset(data: bytes, entries: list[archive.Entry], shape: tuple[int, int]) -> np.ndarray:
    """Each ROI in the archive's order (the ROI Manager's) is one nucleus, later ones over earlier ones."""
    opened = archive.open_archive(data)
    outlines = Outlines(shape, "ROI")
    for entry in entries:
        _add(outlines, archive.read(opened, entry), entry.name)
    return outlines.labels


def _add(outlines: Outlines, data: bytes, name: str) -> None:
    from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi

    try:
        roi = ImagejRoi.frombytes(data)
    except Exception as exc:  # roifile raises ValueError, struct.error, IndexError... for a malformed file
        raise bad_labels(f"ROI {name} is not a readable ImageJ ROI: {exc}") from None
    if roi.name:
        name = f"{name} ({roi.name})"
    kind = roi.roitype
    overlay = roi.subtype in (ROI_SUBTYPE.TEXT, ROI_SUBTYPE.ARROW, ROI_SUBTYPE.IMAGE)
    if overlay or kind in (ROI_TYPE.LINE, ROI_TYPE.FREELINE, ROI_TYPE.POLYLINE, ROI_TYPE.ANGLE, ROI_TYPE.POINT,
                           ROI_TYPE.NOROI):
        what = (roi.subtype if overlay else kind).name.lower()
        raise bad_labels(f"ROI {name} is a {what} ROI, not the outline of a nucleus (use polygon, freehand, "
                         f"traced, oval or rectangle ROIs)", code="unsupported_roi")
    try:
        if roi.composite:
            outlines.add_polygon(roi.coordinates(multi=True), name)
        elif kind == ROI_TYPE.OVAL:
            outlines.add_ellipse(*_box(roi, ROI_OPTIONS), name)
        elif kind == ROI_TYPE.RECT:
            left, top, width, height = _box(roi, ROI_OPTIONS)
            outlines.add_polygon([np.array([[left, top], [left + width, top], [left + width, top + height],
                                            [left, top + height]])], name)
        elif kind in (ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED):
            outlines.add_polygon([roi.coordinates()], name)
        else:
            raise bad_labels(f"ROI {name} is of a type ({int(kind)}) this product does not read",
                             code="unsupported_roi")
    except ImageError:
        raise
    except Exception as exc:  # curves in a composite shape, malformed coordinates
        raise bad_labels(f"ROI {name} has an outline that cannot be read: {exc}") from None


def _box(roi, options) -> tuple[float, float, float, float]:
    """(left, top, width, height) of a rectangle or oval, at sub-pixel precision where the file has it."""
    if roi.version >= 223 and roi.options & options.SUB_PIXEL_RESOLUTION and roi.widthd > 0 and roi.heightd > 0:
        return roi.xd, roi.yd, roi.widthd, roi.heightd
    return roi.left, roi.top, roi.right - roi.left, roi.bottom - roi.top
