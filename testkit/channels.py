"""Multi-channel microscope files for the reading and measuring tests."""
from __future__ import annotations

import io

import numpy as np
import tifffile
from skimage.draw import disk

CENTRES = [(30, 30), (30, 90), (90, 40), (95, 95)]


def two_channel_planes(size: int = 128) -> np.ndarray:
    """Hoechst: four bright discs; EdU: the same discs at 0, 500, 1000, 1500."""
    planes = np.zeros((2, size, size), np.uint16)
    for i, centre in enumerate(CENTRES):
        rr, cc = disk(centre, 10, shape=(size, size))
        planes[0][rr, cc] = 2000 + 100 * i
        planes[1][rr, cc] = 500 * i
    planes[0] += 50
    return planes


def ome_tiff(planes: np.ndarray, names=("Hoechst", "EdU"), pixel_size: float = 0.325) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, planes, ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": list(names)},
                               "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size})
    return buffer.getvalue()
