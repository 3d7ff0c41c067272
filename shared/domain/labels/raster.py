"""Outlines → labels: polygons (with holes) and ellipses filled into a label image, one nucleus per outline.

Coordinates are in the image's pixels with (0, 0) at the top-left corner of the top-left pixel, as ImageJ and
QuPath write them; a pixel belongs to an outline when its centre lies inside it (even-odd rule, so holes and
the parts of a multi-polygon all work). Polygons are filled by a scanline fill, many at once: the crossings
of their edges with the pixel rows' centre lines, sorted, pair into the spans inside each. Later outlines lie
over earlier ones: each gets a larger id and a pixel keeps the largest id that covers it.

What filling costs is bounded by the outlines' row crossings and painted pixels, not by their vertices: an
outline may cross a row MAX_CROSSINGS_PER_ROW times on average, all outlines together may cover the image
MAX_COVERAGE times over, and work is done in batches of at most a quarter of the image's pixels.
"""
from __future__ import annotations

import numpy as np

from shared.domain.imaging.errors import ImageError

# The outlines of one upload together may cover the image (their row crossings and pixels) this many times
# over: nuclei hardly overlap, so more means outlines that are not nuclei, or a request built to cost time.
MAX_COVERAGE = 32  # counted as each outline's row crossings plus its bounding box
# An outline may cross a row of pixels this many times on average (a nucleus crosses each row twice, a few times
# with holes or a ragged edge).
MAX_CROSSINGS_PER_ROW = 64
# Crossings or painted pixels filled at once (about 50 bytes each while filled): a quarter of the image's pixels,
# within these bounds.
MIN_BATCH, MAX_BATCH = 1 << 16, 1 << 20


class Outlines:
    """A label image painted outline by outline: each one a new nucleus over those before it.

    Polygons are only collected as they come; they are checked and filled together, a batch at a time.
    """

    def __init__(self, shape: tuple[int, int], what: str, batch: int | None = None):
        self.shape = (int(shape[0]), int(shape[1]))
        self.what = what
        self._labels = np.zeros(self.shape, dtype=np.uint32)
        self._next_id = 1
        self._work_left = MAX_COVERAGE * self.shape[0] * self.shape[1] + 1_000_000
        self._batch = batch or min(MAX_BATCH, max(MIN_BATCH, self.shape[0] * self.shape[1] // 4))
        self._rings: list[np.ndarray] = []  # every pending ring's (x, y) points
        self._ring_ids: list[int] = []  # the outline id of each pending ring
        self._names: dict[int, str] = {}
        self._pending = 0  # points of the pending rings

    @property
    def labels(self) -> np.ndarray:
        self._flush()
        return self._labels

    def add_polygon(self, rings: list, name: str) -> None:
        """Rings of (x, y) vertices, closed or not; the pixels inside an odd number of rings become one nucleus."""
        outline_id = self._next_id
        kept = 0
        for ring in rings:
            points = _points(ring, name, self.what)
            closed = len(points) > 1 and points[0, 0] == points[-1, 0] and points[0, 1] == points[-1, 1]
            if len(points) - closed >= 3:  # a closing point repeats the first: its edge is empty and crosses no row
                self._rings.append(points)
                self._ring_ids.append(outline_id)
                self._pending += len(points)
                kept += 1
        if not kept:
            raise ImageError(f"{self.what} {name} has fewer than 3 points: it outlines no area", code="bad_labels")
        self._names[outline_id] = name
        self._next_id += 1
        if self._pending >= self._batch:
            self._flush()

    def add_ellipse(self, left: float, top: float, width: float, height: float, name: str) -> None:
        """The ellipse inscribed in the box (left, top, width, height)."""
        box = np.array([left, top, width, height], dtype=np.float64)
        if not np.isfinite(box).all():
            raise ImageError(f"{self.what} {name} has coordinates that are not numbers", code="bad_labels")
        if width <= 0 or height <= 0:
            raise ImageError(f"{self.what} {name} is an ellipse of no area ({width}x{height})", code="bad_labels")
        self._check_inside(left, left + width, top, top + height, name)
        self._flush()  # the polygons before it lie under it
        height_px, width_px = self.shape
        r0, r1 = max(int(np.floor(top)), 0), min(int(np.ceil(top + height)), height_px)
        c0, c1 = max(int(np.floor(left)), 0), min(int(np.ceil(left + width)), width_px)
        self._spend((r1 - r0) * (c1 - c0), name)
        xs = ((np.arange(c0, c1) + 0.5 - (left + width / 2)) / (width / 2)) ** 2
        box_labels = self._labels[r0:r1, c0:c1]
        for i, y in enumerate(((np.arange(r0, r1) + 0.5 - (top + height / 2)) / (height / 2)) ** 2):
            box_labels[i, xs + y < 1.0] = self._next_id
        self._next_id += 1

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

    def _flush(self) -> None:
        """Check and fill every pending polygon."""
        if not self._rings:
            return
        rings, ring_ids, names = self._rings, np.array(self._ring_ids, dtype=np.uint32), self._names
        self._rings, self._ring_ids, self._names, self._pending = [], [], {}, 0
        lengths = np.array([len(ring) for ring in rings])
        start = np.concatenate(rings)
        del rings
        ring_start = np.cumsum(lengths) - lengths
        point_ids = np.repeat(ring_ids, lengths)
        self._check_all_inside(start, point_ids, names)
        # Each point's edge runs to the next point of its ring, the last point's back to the ring's first.
        following = np.arange(1, len(start) + 1)
        following[ring_start + lengths - 1] = ring_start
        end = start[following]
        del following
        slanted = start[:, 1] != end[:, 1]  # horizontal edges cross no row's centre line
        x0, y0, x1, y1 = start[slanted, 0], start[slanted, 1], end[slanted, 0], end[slanted, 1]
        edge_ids = point_ids[slanted]
        del start, end, point_ids, slanted
        # Row r's centre line y = r + 0.5 crosses an edge when low <= y < high (so a shared vertex counts once).
        height = self.shape[0]
        first = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, height).astype(np.int64)
        stop = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, height).astype(np.int64)
        rows = np.maximum(stop - first, 0)
        slope = (x1 - x0) / (y1 - y0)
        del x1, y1
        self._check_crossings(edge_ids, first, stop, rows, names)
        # Fill in groups of whole outlines of about one batch of crossings each (edges are in outline order).
        crossings_before = np.cumsum(rows) - rows
        at = 0
        while at < len(rows):
            upto = max(int(np.searchsorted(crossings_before, crossings_before[at] + self._batch, side="left")), at + 1)
            while upto < len(rows) and edge_ids[upto] == edge_ids[upto - 1]:
                upto += 1
            part = slice(at, upto)
            self._fill(x0[part], y0[part], slope[part], first[part], rows[part], edge_ids[part])
            at = upto

    def _check_all_inside(self, points: np.ndarray, point_ids: np.ndarray, names: dict[int, str]) -> None:
        if not np.isfinite(points).all():
            bad = int(point_ids[~np.isfinite(points).all(axis=1)][0])
            raise ImageError(f"{self.what} {names[bad]} has coordinates that are not finite numbers", code="bad_labels")
        outline_start = np.flatnonzero(np.r_[True, point_ids[1:] != point_ids[:-1]])
        low = np.minimum.reduceat(points, outline_start)
        high = np.maximum.reduceat(points, outline_start)
        height, width = self.shape
        outside = (high[:, 0] <= 0) | (high[:, 1] <= 0) | (low[:, 0] >= width) | (low[:, 1] >= height)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            name = names[int(point_ids[outline_start[i]])]
            self._check_inside(low[i, 0], high[i, 0], low[i, 1], high[i, 1], name)
        # What filling will paint at most: each outline's bounding box within the image.
        low = np.clip(np.floor(low), 0, [width, height])
        high = np.clip(np.ceil(high), 0, [width, height])
        boxes = np.cumsum((high[:, 0] - low[:, 0]) * (high[:, 1] - low[:, 1]))
        over = np.flatnonzero(boxes > self._work_left)
        self._spend(int(boxes[-1]), names[int(point_ids[outline_start[over[0]]])] if len(over) else "")

    def _check_crossings(self, edge_ids, first, stop, rows, names: dict[int, str]) -> None:
        if not len(rows):
            return
        outline_start = np.flatnonzero(np.r_[True, edge_ids[1:] != edge_ids[:-1]])
        crossings = np.add.reduceat(rows, outline_start)
        spanned = np.maximum.reduceat(stop, outline_start) - np.minimum.reduceat(first, outline_start)
        ragged = crossings > MAX_CROSSINGS_PER_ROW * spanned + 4096
        if ragged.any():
            i = int(np.flatnonzero(ragged)[0])
            raise ImageError(f"{self.what} {names[int(edge_ids[outline_start[i]])]} crosses each row of pixels "
                             f"{crossings[i] / max(int(spanned[i]), 1):.0f} times on average: not the outline of a "
                             f"nucleus (at most {MAX_CROSSINGS_PER_ROW})", code="labels_too_complex")
        over = np.flatnonzero(np.cumsum(crossings) > self._work_left)
        self._spend(int(crossings.sum()), names[int(edge_ids[outline_start[over[0]]])] if len(over) else "")

    def _fill(self, x0, y0, slope, first, rows, edge_ids) -> None:
        """Crossings → sorted → paired into spans → painted, a batch of pixels at a time."""
        total = int(rows.sum())
        if total == 0:
            return
        edge = np.repeat(np.arange(len(rows)), rows)
        row = first[edge] + (np.arange(total) - np.repeat(np.cumsum(rows) - rows, rows))
        x = x0[edge] + (row + 0.5 - y0[edge]) * slope[edge]
        outline = edge_ids[edge]
        del edge
        order = np.lexsort((x, row, outline))
        row, x, outline = row[order], x[order], outline[order]
        del order
        # Each outline has an even number of crossings on each row (its rings are closed), so consecutive pairs are
        # the spans inside it. A pixel c lies inside when left <= c + 0.5 < right.
        width = self.shape[1]
        c0 = np.clip(np.ceil(x[0::2] - 0.5), 0, width).astype(np.int64)
        c1 = np.clip(np.ceil(x[1::2] - 0.5), 0, width).astype(np.int64)
        keep = c0 < c1
        starts, lengths, outline = row[0::2][keep] * width + c0[keep], (c1 - c0)[keep], outline[0::2][keep]
        del row, x, c0, c1, keep
        if not len(lengths):
            return
        ends = np.cumsum(lengths)
        flat = self._labels.reshape(-1)
        done = 0
        while done < len(lengths):
            upto = max(int(np.searchsorted(ends, ends[done] - lengths[done] + self._batch, side="right")), done + 1)
            part_lengths = lengths[done:upto]
            offsets = np.arange(int(part_lengths.sum())) - np.repeat(np.cumsum(part_lengths) - part_lengths,
                                                                     part_lengths)
            pixels = np.repeat(starts[done:upto], part_lengths) + offsets
            np.maximum.at(flat, pixels, np.repeat(outline[done:upto], part_lengths))
            done = upto


def _points(ring, name: str, what: str) -> np.ndarray:
    try:
        points = np.asarray(ring, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ImageError(f"{what} {name} has coordinates that are not pairs of numbers", code="bad_labels") from None
    if points.ndim != 2 or points.shape[1] < 2:
        raise ImageError(f"{what} {name} has coordinates that are not pairs of numbers", code="bad_labels")
    points = points[:, :2]
    return points
