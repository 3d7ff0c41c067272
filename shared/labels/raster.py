"""Outlines → labels: polygons (with holes) and ellipses filled into a label image, one nucleus per outline.

Coordinates are in the image's pixels with (0, 0) at the top-left corner of the top-left pixel, as ImageJ and
QuPath write them; a pixel belongs to an outline when its centre lies inside it (even-odd rule, so holes and
the parts of a multi-polygon all work). Filling is a scanline fill whose cost is the outline's crossings of
pixel rows plus its bounding box, so a polygon with many vertices costs no more than its size.
"""
from __future__ import annotations

import numpy as np

from shared.imageio import ImageError

# The outlines of one upload together may cover the image (their bounding boxes and row crossings) this many
# times over: nuclei hardly overlap, so more means outlines that are not nuclei, or a request built to cost time.
MAX_COVERAGE = 32
# An outline may cross a row of pixels this many times on average (a nucleus crosses each row twice, a few times
# with holes or a ragged edge): this bounds the memory of filling one outline by its height, whatever its vertices.
MAX_CROSSINGS_PER_ROW = 64


class Outlines:
    """A label image being painted outline by outline: each one a new nucleus over those before it."""

    def __init__(self, shape: tuple[int, int], what: str):
        self.shape = (int(shape[0]), int(shape[1]))
        self.what = what
        self.labels = np.zeros(self.shape, dtype=np.uint32)
        self.count = 0
        self._work_left = MAX_COVERAGE * self.shape[0] * self.shape[1] + 1_000_000

    def add_polygon(self, rings: list[np.ndarray], name: str) -> None:
        """Rings of (x, y) vertices, closed or not; the pixels inside an odd number of rings become one nucleus."""
        rings = [_points(ring, name, self.what) for ring in rings]
        rings = [ring for ring in rings if len(ring) >= 3]
        if not rings:
            raise ImageError(f"{self.what} {name} has fewer than 3 points: it outlines no area", code="bad_labels")
        everything = np.concatenate(rings)
        self._check_inside(everything[:, 0].min(), everything[:, 0].max(),
                           everything[:, 1].min(), everything[:, 1].max(), name)
        self._paint(_fill_polygon(rings, self.shape, self._spend, name, self.what))

    def add_ellipse(self, left: float, top: float, width: float, height: float, name: str) -> None:
        """The ellipse inscribed in the box (left, top, width, height)."""
        box = np.array([left, top, width, height], dtype=np.float64)
        if not np.isfinite(box).all():
            raise ImageError(f"{self.what} {name} has coordinates that are not numbers", code="bad_labels")
        if width <= 0 or height <= 0:
            raise ImageError(f"{self.what} {name} is an ellipse of no area ({width}x{height})", code="bad_labels")
        self._check_inside(left, left + width, top, top + height, name)
        height_px, width_px = self.shape
        r0, r1 = max(int(np.floor(top)), 0), min(int(np.ceil(top + height)), height_px)
        c0, c1 = max(int(np.floor(left)), 0), min(int(np.ceil(left + width)), width_px)
        self._spend((r1 - r0) * (c1 - c0), name)
        ys = (np.arange(r0, r1) + 0.5 - (top + height / 2)) / (height / 2)
        xs = (np.arange(c0, c1) + 0.5 - (left + width / 2)) / (width / 2)
        inside = ys[:, None] ** 2 + xs[None, :] ** 2 < 1.0
        self._paint((slice(r0, r1), slice(c0, c1), inside))

    def _check_inside(self, xmin: float, xmax: float, ymin: float, ymax: float, name: str) -> None:
        height, width = self.shape
        if xmax <= 0 or ymax <= 0 or xmin >= width or ymin >= height:
            raise ImageError(
                f"{self.what} {name} lies outside the {width}x{height} image (x {xmin:g} to {xmax:g}, "
                f"y {ymin:g} to {ymax:g}): coordinates must be in the image's own pixels, as QuPath and ImageJ "
                f"export them (not micrometres, not another image's or a whole slide's coordinates)",
                code="outside_image")

    def _spend(self, work: int, name: str) -> None:
        self._work_left -= work
        if self._work_left < 0:
            height, width = self.shape
            raise ImageError(f"the {self.what}s up to {name} cover the {width}x{height} image more than "
                             f"{MAX_COVERAGE} times over: one outline per nucleus is expected", code="labels_too_complex")

    def _paint(self, painted: tuple[slice, slice, np.ndarray] | None) -> None:
        if painted is None:
            return
        rows, cols, mask = painted
        if mask.any():
            self.count += 1
            self.labels[rows, cols][mask] = self.count


def _points(ring, name: str, what: str) -> np.ndarray:
    try:
        points = np.asarray(ring, dtype=np.float64)
    except (TypeError, ValueError):
        raise ImageError(f"{what} {name} has coordinates that are not pairs of numbers", code="bad_labels") from None
    if points.ndim != 2 or points.shape[1] < 2:
        raise ImageError(f"{what} {name} has coordinates that are not pairs of numbers", code="bad_labels")
    points = points[:, :2]
    if not np.isfinite(points).all():
        raise ImageError(f"{what} {name} has coordinates that are not finite numbers", code="bad_labels")
    if len(points) > 1 and (points[0] == points[-1]).all():  # closed, as GeoJSON writes rings
        points = points[:-1]
    return points


def _fill_polygon(rings: list[np.ndarray], shape: tuple[int, int], spend, name: str, what: str):
    """(row slice, column slice, mask) of the pixels whose centres lie inside the rings, or None."""
    height, width = shape
    start = np.concatenate(rings)
    end = np.concatenate([np.roll(ring, -1, axis=0) for ring in rings])
    slanted = start[:, 1] != end[:, 1]  # horizontal edges cross no row centre
    x0, y0, x1, y1 = start[slanted, 0], start[slanted, 1], end[slanted, 0], end[slanted, 1]
    # Row r's centre line y = r + 0.5 crosses an edge when low <= y < high (so a vertex counts once).
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.clip(np.ceil(low - 0.5), 0, height).astype(np.int64)
    stop = np.clip(np.ceil(high - 0.5), 0, height).astype(np.int64)
    spans = np.maximum(stop - first, 0)
    total = int(spans.sum())
    if total == 0:
        return None
    rows_spanned = int(stop.max() - first.min())
    if total > MAX_CROSSINGS_PER_ROW * rows_spanned + 4096:
        raise ImageError(f"{what} {name} crosses each row of pixels {total / rows_spanned:.0f} times on average: not the "
                         f"outline of a nucleus (at most {MAX_CROSSINGS_PER_ROW})", code="labels_too_complex")
    spend(total, name)
    edge = np.repeat(np.arange(len(spans)), spans)
    row = first[edge] + (np.arange(total) - np.repeat(np.cumsum(spans) - spans, spans))
    y = row + 0.5
    x = x0[edge] + (y - y0[edge]) * ((x1 - x0) / (y1 - y0))[edge]
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    # Every row has an even number of crossings (each ring is closed), so consecutive pairs are the inside spans.
    rows, left, right = row[0::2], x[0::2], x[1::2]
    # A pixel c is inside when left <= c + 0.5 < right.
    c0 = np.clip(np.ceil(left - 0.5), 0, width).astype(np.int64)
    c1 = np.clip(np.ceil(right - 0.5), 0, width).astype(np.int64)
    keep = c0 < c1
    if not keep.any():
        return None
    rows, c0, c1 = rows[keep], c0[keep], c1[keep]
    r_min, r_max, c_min, c_max = int(rows.min()), int(rows.max()) + 1, int(c0.min()), int(c1.max())
    box_width = c_max - c_min + 1
    spend((r_max - r_min) * box_width, name)
    # +1 where a span starts, -1 where it ends: the spans of a row never overlap, so a running sum is 0 or 1.
    steps = np.zeros((r_max - r_min) * box_width, dtype=np.int8)
    np.add.at(steps, (rows - r_min) * box_width + (c0 - c_min), 1)
    np.add.at(steps, (rows - r_min) * box_width + (c1 - c_min), -1)
    inside = np.cumsum(steps.reshape(r_max - r_min, box_width), axis=1, dtype=np.int8)[:, :-1].astype(bool)
    return slice(r_min, r_max), slice(c_min, c_max), inside
