"""Training transforms for images unlike the training set's: other stains and colours, brightfield, other
magnifications, low signal-to-noise and uneven illumination.

Each transform takes a normalised training crop (3xHxW float32, about 0..1, as shared.model.preprocess.normalize
gives it) and explicit parameters, and returns a new crop of the same shape; none moves a pixel, so the label
targets stay valid untouched. `apply()` draws the parameters and picks the transforms by their probabilities
(TrainConfig.robust_augment).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import hed2rgb, rgb2hed

# Kinds whose crops are already stained (dark nuclei on a bright background), as shared.datasets names them.
STAINED_KINDS = ("stained", "stained-tissue", "brightfield")


def _to_rgb(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0.0, 1.0).permute(1, 2, 0).numpy().astype(np.float64)


def _from_rgb(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.clip(rgb, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32))


def hed_jitter(x: torch.Tensor, scale: tuple[float, float, float], shift: tuple[float, float, float]) -> torch.Tensor:
    """Stain variation: each of the haematoxylin, eosin and DAB concentrations (skimage's colour deconvolution)
    is multiplied by 1 + scale[i] and moved by shift[i], as a lab's stain strength and a scanner's colour do."""
    hed = rgb2hed(_to_rgb(x))
    hed = hed * (1.0 + np.asarray(scale)) + np.asarray(shift) * (hed.max(axis=(0, 1)) - hed.min(axis=(0, 1)) + 1e-3)
    return _from_rgb(hed2rgb(hed))


def fluorescence_to_stained(x: torch.Tensor, haematoxylin: float, eosin: float) -> torch.Tensor:
    """A fluorescence crop (bright nuclei on dark) rendered as a brightfield stain: the nuclear signal becomes a
    haematoxylin concentration (dark purple nuclei) on a faint eosin background, so the abundant fluorescence
    images teach the look of stained slides. `haematoxylin` (at the brightest signal) and `eosin` are
    concentrations in skimage's units: 0.05 to 0.15 haematoxylin gives pale to deep purple nuclei, 0.01 to 0.03
    eosin a pink background."""
    signal = x.clamp(0.0, 1.0).mean(0).numpy().astype(np.float64)
    hed = np.zeros(signal.shape + (3,))
    hed[..., 0] = signal * haematoxylin
    hed[..., 1] = eosin
    return _from_rgb(hed2rgb(hed))


def low_magnification(x: torch.Tensor, factor: float) -> torch.Tensor:
    """A crop as a lower-magnification objective sees it, enlarged back to this size: detail finer than
    `factor` pixels is lost (factor 3: a 20x image enlarged to the 63x nucleus size)."""
    _, h, w = x.shape
    small = (max(2, int(round(h / factor))), max(2, int(round(w / factor))))
    down = F.interpolate(x[None], size=small, mode="area")
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)[0]


def low_signal(x: torch.Tensor, photons: float, read_noise: float, generator: torch.Generator) -> torch.Tensor:
    """Low signal-to-noise: shot noise as if the brightest pixel had caught `photons` photons, plus Gaussian
    camera read noise of `read_noise` (in units of the 0..1 range). The mean stays where it was."""
    signal = x.clamp(min=0.0) * photons
    noisy = torch.poisson(signal, generator=generator) / photons
    return noisy + x.clamp(max=0.0) + torch.randn(x.shape, generator=generator) * read_noise


def uneven_background(x: torch.Tensor, gradient: tuple[float, float], vignette: float, offset: float) -> torch.Tensor:
    """Uneven illumination: a smooth gain (a linear ramp of slope `gradient` across the crop in y and x, times a
    vignette darkening the corners by `vignette`) and a smooth additive glow of `offset` at the centre."""
    _, h, w = x.shape
    yy = torch.linspace(-1.0, 1.0, h)[:, None].expand(h, w)
    xx = torch.linspace(-1.0, 1.0, w)[None, :].expand(h, w)
    radius2 = (yy**2 + xx**2) / 2.0
    gain = (1.0 + gradient[0] * yy / 2 + gradient[1] * xx / 2) * (1.0 - vignette * radius2)
    glow = offset * torch.exp(-radius2 * 2.0)
    return x * gain.clamp(min=0.05) + glow


TRANSFORMS = ("stain", "to-stained", "magnification", "noise", "background")


def apply(x: torch.Tensor, kind: str, probabilities: dict[str, float], rng: random.Random) -> torch.Tensor:
    """Each transform named in `probabilities` (one of TRANSFORMS) with its probability, parameters drawn from
    `rng`. Stain jitter acts on stained crops and on fluorescence crops just rendered as stained."""
    unknown = sorted(set(probabilities) - set(TRANSFORMS))
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}: one of {', '.join(TRANSFORMS)}")
    stained = kind in STAINED_KINDS
    if kind == "fluorescence" and rng.random() < probabilities.get("to-stained", 0.0):
        x = fluorescence_to_stained(x, haematoxylin=rng.uniform(0.05, 0.15), eosin=rng.uniform(0.0, 0.03))
        stained = True
    if stained and rng.random() < probabilities.get("stain", 0.0):
        x = hed_jitter(x, tuple(rng.uniform(-0.3, 0.3) for _ in range(3)),
                       tuple(rng.uniform(-0.05, 0.05) for _ in range(3)))
    if rng.random() < probabilities.get("magnification", 0.0):
        x = low_magnification(x, math.exp(rng.uniform(math.log(1.5), math.log(4.0))))
    if rng.random() < probabilities.get("background", 0.0):
        x = uneven_background(x, (rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6)), rng.uniform(0.0, 0.5),
                              rng.uniform(-0.1, 0.2))
    if rng.random() < probabilities.get("noise", 0.0):
        generator = torch.Generator().manual_seed(rng.randint(0, 2**31))
        x = low_signal(x, photons=math.exp(rng.uniform(math.log(8.0), math.log(200.0))),
                       read_noise=rng.uniform(0.0, 0.05), generator=generator)
    return x
