"""From per-pixel maps to one integer label per nucleus.

`instances` is the product's path: one seed per peak of the predicted distance map (a peak must stand
`seed_height` above the saddle that joins it to a neighbour, so touching nuclei keep separate seeds while
one nucleus's uneven plateau does not split), then a watershed on the distance map restricted to the
foreground, and finally objects the network is unsure of are dropped. `connected_components` is the naive
alternative kept for the accuracy benchmark, and `classical` the threshold-plus-watershed baseline that
needs no model.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation


@dataclass(frozen=True)
class PostprocessSettings:
    # Chosen on 160 images of the training split (never the validation split) by bench/tune_postprocess.py.
    foreground_threshold: float = 0.5
    seed_height: float = 0.3  # in units of the distance map (1 at a nucleus centre)
    smoothing: float = 0.0  # Gaussian sigma in pixels, applied to the distance map before finding peaks
    boundary_threshold: float = 0.5  # seeds never sit on the predicted rim
    min_confidence: float = 0.8  # an object's mean foreground probability, below which it is dropped (0: off)
    min_size: int = 10

    @classmethod
    def from_dict(cls, stored: dict) -> "PostprocessSettings":
        """Settings stored in a weights file; keys of an older post-processing are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in known})


def _relabel(labels: np.ndarray) -> np.ndarray:
    out, _, _ = segmentation.relabel_sequential(labels)
    return out.astype(np.uint32, copy=False)


def _drop(labels: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Set to background every label whose entry in `dropped` (indexed by label) is true."""
    dropped[0] = False
    return np.where(dropped[labels], 0, labels)


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    return _drop(labels, np.bincount(labels.ravel()) < min_size)


def _drop_unsure(labels: np.ndarray, foreground: np.ndarray, min_confidence: float) -> np.ndarray:
    if not min_confidence or labels.max() == 0:
        return labels
    confidence = np.asarray(ndi.mean(foreground, labels, index=np.arange(labels.max() + 1)))
    return _drop(labels, confidence < min_confidence)


def _peaks(relief: np.ndarray, mask: np.ndarray, height: float) -> np.ndarray:
    """The tops of the peaks of `relief` that rise `height` above the saddle joining them to a higher (or equal)
    peak: the regional maxima of its h-maxima transform. Computed blob by blob, so that the time follows the
    nuclei's area rather than the image's: most images are mostly background."""
    peaks = np.zeros(mask.shape, bool)
    blobs, _ = ndi.label(mask)
    for index, box in enumerate(ndi.find_objects(blobs), start=1):
        inside = blobs[box] == index
        top = np.where(inside, relief[box], 0.0).astype(np.float64)
        peaks[box] |= morphology.local_maxima(morphology.reconstruction(top - height, top)) & inside
    return peaks


def instances(foreground: np.ndarray, boundary: np.ndarray, distance: np.ndarray,
              settings: PostprocessSettings = PostprocessSettings()) -> np.ndarray:
    """Probability maps (HxW, 0..1) → uint32 label image, 0 = background."""
    mask = foreground > settings.foreground_threshold
    mask = morphology.remove_small_holes(mask, max_size=settings.min_size * 4)
    relief = filters.gaussian(distance, settings.smoothing) if settings.smoothing else distance
    peaks = _peaks(relief, mask, settings.seed_height) & (boundary < settings.boundary_threshold)
    # Peaks a pixel or two apart are one nucleus's ragged top, not two nuclei.
    seeds, n_seeds = ndi.label(ndi.binary_dilation(peaks) & mask)
    labels = segmentation.watershed(-relief, seeds, mask=mask)
    # Foreground blobs too small or flat to carry a peak are nuclei too.
    orphans, n_orphans = ndi.label(mask & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + n_seeds, labels)
    labels = _drop_unsure(labels, foreground, settings.min_confidence)
    return _relabel(_drop_small(labels, settings.min_size))


def connected_components(foreground: np.ndarray, threshold: float = 0.5, min_size: int = 10) -> np.ndarray:
    labels = measure.label(foreground > threshold)
    return _relabel(_drop_small(labels, min_size))


def classical(image: np.ndarray, min_size: int = 10) -> np.ndarray:
    """Otsu threshold (polarity chosen from the image) plus distance-transform watershed."""
    from shared.domain.model.preprocess import normalize

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
