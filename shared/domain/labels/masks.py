"""A zip of binary masks, one image file per nucleus (the DSB2018 layout), read one entry at a time."""
from __future__ import annotations

import numpy as np

from shared.domain.imaging.errors import ImageError
from shared.domain.labels import archive
from shared.domain.labels.errors import within
from shared.domain.labels.image import read_sized

MAX_MASKS = 20_000
# Each mask is a whole image to decode, so decoding is what a mask upload costs: at most this many pixels decoded
# in all, so 8192 masks of a 256x256 image or 128 of a 2048x2048 one; more nuclei come as one label image, as
# ImageJ ROIs or as GeoJSON.
MAX_MASK_PIXELS = 1 << 29


def mask_entry_limit(shape: tuple[int, int]) -> int:
    """The most bytes one mask file may inflate to: its pixels uncompressed at up to 8 bytes each."""
    return 8 * shape[0] * shape[1] + (64 << 10)


def from_mask_zip(data: bytes, entries: list[archive.Entry], shape: tuple[int, int]) -> np.ndarray:
    """Each mask's non-zero pixels become one nucleus, later masks over earlier ones (in name order)."""
    most = min(MAX_MASKS, max(1, MAX_MASK_PIXELS // (shape[0] * shape[1])))
    if len(entries) > most:
        raise archive.ArchiveTooLarge(f"the zip holds {len(entries)} masks; for a {shape[1]}x{shape[0]} image at most "
                                      f"{most}: send more nuclei as one label image, an ImageJ RoiSet or GeoJSON")
    opened = archive.open_archive(data)
    labels = np.zeros(shape, dtype=np.uint32)
    for i, entry in enumerate(sorted(entries, key=lambda e: e.name), start=1):
        try:
            mask = read_sized(archive.read(opened, entry), shape, "it")
        except ImageError as exc:
            raise within(exc, f"mask {entry.name}") from None
        if mask.ndim == 3:  # a nucleus wherever any channel is set, without a boolean per channel
            mask = mask.max(axis=2)
        labels.reshape(-1)[np.flatnonzero(mask > 0)] = i
        del mask
    return labels

