"""From per-pixel maps to one integer label per nucleus.

`instances` is the product's path: seeds from the predicted distance map (with the predicted
boundary cut out, so touching nuclei keep separate seeds), then a watershed on the distance map
restricted to the foreground. `connected_components` is the naive alternative kept for the
accuracy benchmark, and `classical` the threshold-plus-watershed baseline that needs no model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation


@dataclass(frozen=True)
class PostprocessSettings:
    # Chosen on 80 images of the training split (never the validation split); see the model card.
    foreground_threshold: float = 0.6
    seed_threshold: float = 0.3
    boundary_threshold: float = 0.5
    min_size: int = 10


def _relabel(labels: np.ndarray) -> np.ndarray:
    out, _, _ = segmentation.relabel_sequential(labels)
    return out.astype(np.uint32, copy=False)


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def instances(foreground: np.ndarray, boundary: np.ndarray, distance: np.ndarray,
              settings: PostprocessSettings = PostprocessSettings()) -> np.ndarray:
    """Probability maps (HxW, 0..1) → uint32 label image, 0 = background."""
    mask = foreground > settings.foreground_threshold
    mask = morphology.remove_small_holes(mask, max_size=settings.min_size * 4)
    seeds_mask = mask & (distance > settings.seed_threshold) & (boundary < settings.boundary_threshold)
    seeds, n_seeds = ndi.label(seeds_mask)
    labels = segmentation.watershed(-distance, seeds, mask=mask)
    # Foreground blobs too small or thin to carry a seed are nuclei too.
    orphans, n_orphans = ndi.label(mask & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + n_seeds, labels)
    return _relabel(_drop_small(labels, settings.min_size))


def connected_components(foreground: np.ndarray, threshold: float = 0.5, min_size: int = 10) -> np.ndarray:
    labels = measure.label(foreground > threshold)
    return _relabel(_drop_small(labels, min_size))


def classical(image: np.ndarray, min_size: int = 10) -> np.ndarray:
    """Otsu threshold (polarity chosen from the image) plus distance-transform watershed."""
    from shared.model.preprocess import normalize

    grey = normalize(image).mean(axis=0)
    grey = filters.gaussian(grey, sigma=1)
    threshold = filters.threshold_otsu(grey)
    mask = grey > threshold
    if mask.mean() > 0.5:  # bright background: nuclei are the dark part
        mask = ~mask
    mask = morphology.remove_small_objects(ndi.binary_fill_holes(mask), max_size=min_size - 1)
    distance = ndi.distance_transform_edt(mask)
    smooth = filters.gaussian(distance, sigma=1.5)
    peaks = morphology.h_maxima(smooth, 1.0)
    seeds, _ = ndi.label(peaks & mask)
    labels = segmentation.watershed(-smooth, seeds, mask=mask)
    return _relabel(_drop_small(labels, min_size))
