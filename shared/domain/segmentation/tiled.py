"""Images too big to segment whole: segmented and measured region by region in bounded memory.

The whole-image path holds the network's maps, the post-processing's working arrays and float copies of the
image at once, dozens of bytes a pixel. Above `Settings.whole_image_max_pixels` the image is cut into square
regions, each read with a margin of context wider than a nucleus: the network and the seeded watershed run on the
region with its margin, and a nucleus is kept by the region whose core holds its centroid, so each one is kept
exactly once and whole, even where it crosses a seam. Kept nuclei are written into one uint32 label image under
global labels (a running offset), only on pixels no earlier region claimed; a nucleus mostly claimed already is
the same nucleus seen from the other side of a seam and is dropped. Each region's nuclei are measured as written,
on that region's crop, so measurements never need the whole image as floats either.

Every region is normalised with the whole image's intensity range and enlarged by the factor measured on the
whole image's central window, so a region sees exactly what the whole-image path would show the network there.

This module imports no torch (the API estimates a worker's memory with it); the segmenter is passed in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

REGION = 1536  # side of a region's core, in the image's pixels
MARGIN = 128   # context read around each core: wider than a nucleus, and than the network's reach at a cut
NETWORK_TILE = 512  # the network's tiles within a region: its working memory grows with their area
OVERLAY_MAX_PIXELS = 2048 * 2048  # overlays of larger images are drawn on a downscaled copy
DUPLICATE_SHARE = 0.5  # a kept nucleus with this share of its pixels already claimed is a nucleus seen twice

# A worker's memory, as measured by bench/big_images.py (VmHWM) and rounded up.
MODEL_BYTES = 400_000_000  # the interpreter, the model and its runtime
NETWORK_BYTES_PER_PIXEL = 550  # the network's working memory, per pixel of its tile
REGION_BYTES = 700_000_000  # one region's maps, enlarged and back, and its post-processing
WHOLE_BYTES_PER_PIXEL = 70  # the whole-image path's maps and post-processing, per pixel of the image
LABEL_BYTES_PER_PIXEL = 4  # the uint32 label image
TIFF_BYTES_PER_PIXEL = 2  # the 16-bit copy of the label image written as TIFF
OVERLAY_BYTES = 60 * OVERLAY_MAX_PIXELS


def worker_memory_needed(height: int, width: int, image_bytes: int, settings) -> int:
    """The most memory a worker uses to segment, measure and write out an image of this size whose decoded
    arrays (segmented image and measured channels) take `image_bytes`."""
    pixels = height * width
    if pixels <= settings.whole_image_max_pixels:
        network = NETWORK_BYTES_PER_PIXEL * settings.tile_size ** 2
        return MODEL_BYTES + network + WHOLE_BYTES_PER_PIXEL * pixels + image_bytes
    network = NETWORK_BYTES_PER_PIXEL * min(settings.tile_size, NETWORK_TILE) ** 2
    segmenting = MODEL_BYTES + network + REGION_BYTES + LABEL_BYTES_PER_PIXEL * pixels
    writing = MODEL_BYTES + (LABEL_BYTES_PER_PIXEL + TIFF_BYTES_PER_PIXEL) * pixels + OVERLAY_BYTES
    return max(segmenting, writing) + image_bytes


def decoded_bytes(nuclear: np.ndarray, channels: np.ndarray | None) -> int:
    """Bytes held by a picture's arrays (the channels counted once where they are the segmented image)."""
    total = nuclear.nbytes
    if channels is not None and not np.may_share_memory(nuclear, channels):
        total += channels.nbytes
    return total


def refusal(height: int, width: int, image_bytes: int, settings) -> str | None:
    """Why a worker cannot take this image within Settings.worker_memory_bytes, or None when it can."""
    needed = worker_memory_needed(height, width, image_bytes, settings)
    if needed <= settings.worker_memory_bytes:
        return None
    return (f"a {width}x{height} image needs about {needed / 2**30:.1f} GiB in a worker, more than the "
            f"{settings.worker_memory_bytes / 2**30:.1f} GiB a worker may use (NUCLEUS_WORKER_MEMORY_BYTES)")


@dataclass(frozen=True)
class Region:
    core: tuple[slice, slice]   # the pixels whose nuclei this region keeps
    outer: tuple[slice, slice]  # the core with its margin: what is segmented

    @property
    def origin(self) -> tuple[int, int]:
        return self.outer[0].start, self.outer[1].start


def regions(height: int, width: int, region: int = REGION, margin: int = MARGIN) -> list[Region]:
    out = []
    for top in range(0, height, region):
        for left in range(0, width, region):
            bottom, right = min(height, top + region), min(width, left + region)
            out.append(Region((slice(top, bottom), slice(left, right)),
                              (slice(max(0, top - margin), min(height, bottom + margin)),
                               slice(max(0, left - margin), min(width, right + margin)))))
    return out


def _centroids(labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column centroid of labels 1..count."""
    flat = labels.ravel()
    area = np.bincount(flat, minlength=count + 1)[1:].astype(np.float64)
    rows, cols = np.divmod(np.arange(flat.size), labels.shape[1])
    sum_r = np.bincount(flat, weights=rows, minlength=count + 1)[1:]
    sum_c = np.bincount(flat, weights=cols, minlength=count + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sum_r / area, sum_c / area


def _claim(labels: np.ndarray, found: np.ndarray, region: Region, next_label: int) -> int:
    """Write into `labels` the nuclei of `found` (this region's own labels over its outer box) that the region
    keeps, numbered from `next_label`. Returns how many were written."""
    count = int(found.max())
    if count == 0:
        return 0
    top, left = region.origin
    cy, cx = _centroids(found, count)
    in_core = ((cy >= region.core[0].start - top) & (cy < region.core[0].stop - top)
               & (cx >= region.core[1].start - left) & (cx < region.core[1].stop - left))
    view = labels[region.outer]
    free = view == 0
    area = np.bincount(found.ravel(), minlength=count + 1)[1:]
    taken = area - np.bincount(found[free], minlength=count + 1)[1:]
    keep = in_core & (taken < DUPLICATE_SHARE * np.maximum(area, 1))
    numbering = np.zeros(count + 1, np.uint32)
    numbering[1:][keep] = next_label + np.arange(int(keep.sum()), dtype=np.uint32)
    new = numbering[found]
    write = free & (new > 0)
    view[write] = new[write]
    return int(keep.sum())


def _placed(rows: list[dict], region: Region, first_label: int, pixel_size_um: float | None) -> list[dict]:
    """Rows measured on a region's crop, in whole-image labels and coordinates."""
    from shared.domain.measurement import PHYSICAL

    top, left = region.origin
    for row in rows:
        row["label"] += first_label - 1
        row["centroid_x"] += left
        row["centroid_y"] += top
        measures = row.get("measures")
        if pixel_size_um and measures is not None:
            for column in ("centroid_x", "centroid_y"):
                physical, power = PHYSICAL[column]
                measures[physical] = row[column] * pixel_size_um ** power
    return rows


Measure = Callable[[np.ndarray, tuple[slice, slice]], list[dict]]


def segment_in_regions(segmenter, image: np.ndarray, measure: Measure | None = None,
                       pixel_size_um: float | None = None, diameter: float | None = None,
                       region: int | None = None, margin: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """The uint32 label image of `image` (HxW or HxWxC) and, with `measure`, its nuclei's rows.

    `measure(labels, box)` measures nuclei numbered 1..n in `labels`, a crop of the image at `box`
    (e.g. shared.domain.measurement.measure_nuclei on the image's and channels' crops); its rows come back renumbered and
    placed in the whole image (`pixel_size_um`: for the µm centroids). `region`, `margin`: default REGION, MARGIN."""
    from shared.domain.model.preprocess import intensity_range
    from shared.domain.segmentation.postprocess import instances

    height, width = image.shape[:2]
    intensity = intensity_range(image)
    f = segmenter.factor_for(image, intensity, diameter)
    labels = np.zeros((height, width), np.uint32)
    rows: list[dict] = []
    next_label = 1
    for part in regions(height, width, region or REGION, MARGIN if margin is None else margin):
        p = segmenter.predict_part(image[part.outer], intensity, f, tile=min(segmenter.tile, NETWORK_TILE))
        found = instances(p.foreground, p.boundary, p.distance, segmenter.postprocess)
        del p
        written = _claim(labels, found, part, next_label)
        del found
        if written and measure is not None:
            view = labels[part.outer]
            mine = (view >= next_label) & (view < next_label + written)
            local = np.where(mine, view - (next_label - 1), 0).astype(np.uint32)
            rows.extend(_placed(measure(local, part.outer), part, next_label, pixel_size_um))
        next_label += written
    return labels, rows


def overlay_view(image: np.ndarray, labels: np.ndarray, max_pixels: int = OVERLAY_MAX_PIXELS):
    """The image and labels to draw an overlay on: as they are, or every k-th pixel of each where they have more
    than `max_pixels` (views, no copies)."""
    step = math.ceil(math.sqrt(labels.size / max_pixels))
    if step <= 1:
        return image, labels
    return image[::step, ::step], labels[::step, ::step]


def segment_and_measure(segmenter, image: np.ndarray, measure: Measure, pixel_size_um: float | None,
                        whole_image_max_pixels: int) -> tuple[np.ndarray, list[dict]]:
    """The label image and nuclei rows of `image`: whole as always up to `whole_image_max_pixels`, in regions
    above. `measure(labels, box)` as for segment_in_regions (the whole image's box is (slice(None),) * 2)."""
    height, width = image.shape[:2]
    if height * width <= whole_image_max_pixels:
        labels = segmenter.segment(image)
        return labels, measure(labels, (slice(None), slice(None)))
    return segment_in_regions(segmenter, image, measure, pixel_size_um)
