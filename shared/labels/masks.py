"""A zip of binary masks, one image file per nucleus (the DSB2018 layout), read one entry at a time."""
from __future__ import annotations

import numpy as np

from shared.imageio import ImageError
from shared.labels import archive
from shared.labels.errors import within
from shared.labels.image import read_sized

MAX_MASKS = 20_000


def mask_entry_limit(shape: tuple[int, int]) -> int:
    """The most bytes one mask file may inflate to: its pixels uncompressed at up to 8 bytes each."""
    return 8 * shape[0] * shape[1] + (64 << 10)


def from_mask_zip(data: bytes, entries: list[archive.Entry], shape: tuple[int, int]) -> np.ndarray:
    """Each mask's non-zero pixels become one nucleus, later masks over earlier ones (in name order)."""
    if len(entries) > MAX_MASKS:
        raise archive.ArchiveTooLarge(f"the zip holds {len(entries)} masks; at most {MAX_MASKS}")
    opened = archive.open_archive(data)
    labels = np.zeros(shape, dtype=np.uint32)
    for i, entry in enumerate(sorted(entries, key=lambda e: e.name), start=1):
        try:
            mask = read_sized(archive.read(opened, entry), shape, "it")
        except ImageError as exc:
            raise within(exc, f"mask {entry.name}") from None
        if mask.ndim == 3:  # a nucleus wherever any channel is set, without a boolean per channel
            mask = mask.max(axis=2)
        labels[mask > 0] = i
        del mask
    return labels

