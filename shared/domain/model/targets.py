"""Training targets derived from a label image (0 = background, 1..N = nuclei)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries


def instance_targets(labels: np.ndarray) -> np.ndarray:
    """Label image → 3xHxW float32: foreground, boundary, normalised distance (see unet.OUTPUTS)."""
    labels = np.asarray(labels)
    foreground = labels > 0
    boundary = find_boundaries(labels, mode="inner") & foreground
    distance = ndi.distance_transform_edt(foreground & ~find_boundaries(labels, mode="outer"))
    if labels.max() > 0:
        peak = ndi.maximum(distance, labels, index=np.arange(labels.max() + 1))
        peak = np.asarray(peak, dtype=np.float32)
        peak[peak == 0] = 1.0
        distance = np.where(foreground, distance / peak[labels], 0.0)
    return np.stack([foreground, boundary, distance]).astype(np.float32)


def contact_zone(labels: np.ndarray, radius: int = 3) -> np.ndarray:
    """Pixels within `radius` of two different nuclei: where touching nuclei meet or nearly meet.

    Few pixels, but the ones that decide whether two nuclei are counted as one (the weight map of
    Ronneberger et al.'s U-Net paper, as a band rather than a decaying exponential)."""
    labels = np.asarray(labels)
    size = 2 * radius + 1
    outside = np.iinfo(np.uint32).max
    highest = ndi.maximum_filter(labels.astype(np.uint32), size)
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, outside).astype(np.uint32), size)
    return (highest > 0) & (lowest != outside) & (highest != lowest)
