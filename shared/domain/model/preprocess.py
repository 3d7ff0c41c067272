"""Turn any decoded microscope image into the network's input.

Grey, RGB and RGBA; 8-bit, 16-bit or float. Intensities are rescaled per image between robust
percentiles, so the same weights see fluorescence and brightfield images on one scale without a
user-set switch. Colour is kept (stained nuclei differ from cytoplasm by hue, not only by brightness).
"""
from __future__ import annotations

import numpy as np

LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.8


def as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 → HxWx3 float32 (alpha dropped, grey repeated)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"expected a 2-D image with optional channels, got shape {image.shape}")
    channels = image.shape[2]
    if channels == 4:
        image = image[..., :3]
    elif channels == 2:
        image = image[..., :1]
    elif channels not in (1, 3):
        raise ValueError(f"expected 1, 3 or 4 channels, got {channels}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image.astype(np.float32, copy=False)


def intensity_range(image: np.ndarray) -> tuple[float, float]:
    """The image's robust low and high intensity, read off a sample of at most about 512x512 of its pixels."""
    image = np.asarray(image)
    sample = image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)]
    lo, hi = np.percentile(as_rgb(sample).mean(axis=2), [LOW_PERCENTILE, HIGH_PERCENTILE])
    if hi - lo < 1e-6:
        hi = lo + 1.0
    return np.float64(lo), np.float64(hi)  # float64 scalars: the arithmetic below stays in float64


def normalize(image: np.ndarray, intensity: tuple[float, float] | None = None) -> np.ndarray:
    """HxW[xC] image → 3xHxW float32, about 0..1 between the image's own percentiles (or `intensity`, the
    whole image's range when `image` is a part of it)."""
    lo, hi = intensity or intensity_range(image)
    rgb = as_rgb(image)
    out = (rgb - lo) / (hi - lo)
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)
