"""Nuclei come at every size; the network sees them at one.

DSB2018 nuclei range from 8 to 60 pixels across. A U-Net of fixed receptive field merges small, packed
nuclei and splits large ones, so (as Cellpose does) training resizes each image to put its median nucleus
at one diameter, and inference first measures the nuclei of an image and then segments it resized the
same way. The factor is bounded: beyond 2x the input adds time but no detail, below 0.5x it loses it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

MIN_FACTOR, MAX_FACTOR = 0.5, 2.0
# Weights without a size model (shared.domain.model.size) measure nuclei on a quick segmentation, which reads merged
# small nuclei as large ones; enlarging those images beyond 1.4x bought almost no accuracy for the time it costs
# (bench/README.md, "Figures behind defaults").
MAX_INFERENCE_FACTOR = 1.4
# Within this ratio of 1 the image is used as it is: resizing would cost time for no gain.
NEGLIGIBLE = 1.15


def median_diameter(labels: np.ndarray) -> float:
    """Diameter of the circle with the median nucleus's area; 0 when there are no nuclei."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    return float(np.sqrt(np.median(areas) * 4 / np.pi)) if len(areas) else 0.0


def factor(measured: float, target: float | None, largest: float = MAX_FACTOR) -> float:
    """How much to enlarge an image whose nuclei measure `measured` so that they measure `target`."""
    if not target or not measured > 0:  # nothing measured (no nuclei, or NaN)
        return 1.0
    f = min(max(target / measured, MIN_FACTOR), largest)
    return 1.0 if abs(math.log(f)) < math.log(NEGLIGIBLE) else f


def scaled_size(height: int, width: int, f: float) -> tuple[int, int]:
    return max(1, round(height * f)), max(1, round(width * f))


def resize_maps(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CxHxW float maps (an image or probabilities) to `size`, smoothly; anti-aliased when shrinking."""
    if tuple(x.shape[1:]) == tuple(size):
        return x
    import torch.nn.functional as F  # here: the rest of this module serves processes without torch

    shrinking = size[0] < x.shape[1]
    return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False, antialias=shrinking)[0]


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label image to `size` by nearest neighbour: labels stay labels."""
    if labels.shape == tuple(size):
        return labels
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(labels.astype(np.int64))[None, None].double()
    return F.interpolate(t, size=size, mode="nearest-exact")[0, 0].numpy().astype(labels.dtype)
