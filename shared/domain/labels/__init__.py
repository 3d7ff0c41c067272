"""Reading a scientist's corrected segmentation of one image, in the formats labs use:

- a label image (PNG/TIFF, 0 = background, 1..N = nuclei),
- a zip of binary masks, one file per nucleus (shared.domain.labels.masks),
- an ImageJ/Fiji RoiSet.zip or a single .roi (shared.domain.labels.imagej),
- QuPath GeoJSON (shared.domain.labels.geojson).

Everything is checked against the image it labels before it is inflated: a label image's header size, an
archive's declared sizes (shared.domain.labels.archive), a GeoJSON's number of values, outlines' row crossings. So
one upload costs the API at most memory_bound(): its file (at most NUCLEUS_MAX_LABEL_BYTES) twice over, plus
MEMORY_BYTES_PER_PIXEL per pixel of the image (the label array and one decoded mask, or the outlines being
filled, at a time), plus MEMORY_FLOOR_BYTES that small images are allowed whatever their size.
"""
from __future__ import annotations

import numpy as np

from shared.domain.imaging.errors import ImageError
from shared.domain.labels import archive, geojson, imagej, masks
from shared.domain.labels.errors import bad_labels
from shared.domain.labels.image import read_label_image

# What one upload may hold at once per pixel of the labelled image, besides its file: a label image decoded (up
# to 16, the decoder's own bound) and its first channel (8); or the uint32 labels (4) with one mask file inflated
# (8) and decoded (16); or a GeoJSON's values (16) or outlines being filled (19) with the labels (4).
MEMORY_BYTES_PER_PIXEL = 32
MEMORY_FLOOR_BYTES = 16 << 20


def memory_bound(file_bytes: int, shape: tuple[int, int]) -> int:
    """The most memory parsing and storing one label upload of `file_bytes` for an image of `shape` may take."""
    return 2 * file_bytes + MEMORY_BYTES_PER_PIXEL * shape[0] * shape[1] + MEMORY_FLOOR_BYTES


def parse_label_upload(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """The bytes of a label upload for an image of `shape` (height, width) → HxW labels (0 = background).

    Raises ImageError (a 4xx, with a stable code) when they are malformed, too large, of another size than
    the image, or hold no nucleus.
    """
    shape = (int(shape[0]), int(shape[1]))
    if archive.is_zip(data):
        labels = _from_zip(data, shape)
    elif imagej.is_roi(data):
        labels = imagej.from_roi(data, shape)
    elif geojson.looks_like_geojson(data):
        labels = geojson.from_geojson(data, shape)
    else:
        labels = read_label_image(data, shape)
    if not labels.any():
        raise bad_labels("the labels hold no nucleus (all background)")
    return labels


def _from_zip(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    found = archive.files(archive.entries(data))
    if not found:
        raise bad_labels("the zip holds no mask images and no ImageJ ROIs")
    rois = [entry for entry in found if imagej.is_roi_name(entry.name)]
    if rois and len(rois) != len(found):
        other = next(entry.name for entry in found if not imagej.is_roi_name(entry.name))
        raise bad_labels(f"the zip mixes ImageJ ROIs (.roi) with other files ({other}); send a RoiSet or masks")
    if rois:
        archive.check(data, found, imagej.roi_entry_limit(shape), "ROI file for this image")
        return imagej.from_roiset(data, found, shape)
    archive.check(data, found, masks.mask_entry_limit(shape), "mask of this image")
    return masks.from_mask_zip(data, found, shape)


__all__ = ["ImageError", "parse_label_upload"]
