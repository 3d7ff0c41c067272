"""Training transforms for images unlike the training set's: other stains and colours, brightfield, other
magnifications, low signal-to-noise and uneven illumination.

Each transform takes a normalised training crop (3xHxW float32, about 0..1, as shared.domain.model.preprocess.normalize
gives it) and explicit parameters, and returns a new crop of the same shape; none moves a pixel, so the label
targets stay valid untouched. `apply()` draws the parameters and picks the transforms by their probabilities
(TrainConfig.robust_augment).
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from skimage.color import hed_from_rgb, rgb_from_hed

# Kinds whose crops are already stained (dark nuclei on a bright background), as shared.domain.datasets.labelled names them.
STAINED_KINDS = ("stained", "stained-tissue", "brightfield")


# skimage.color's colour deconvolution (Ruifrok & Johnston's H&E-DAB vectors), applied in float32 on the crop:
# skimage.color.rgb2hed / hed2rgb compute the same in float64 several times slower.
_LOG_FLOOR = math.log(1e-6)
_HED_FROM_RGB = torch.tensor(hed_from_rgb, dtype=torch.float32)
_RGB_FROM_HED = torch.tensor(rgb_from_hed, dtype=torch.float32)


def rgb_to_hed(x: torch.Tensor) -> torch.Tensor:
    """3xHxW RGB in 0..1 → 3xHxW haematoxylin, eosin, DAB concentrations (as skimage.color.rgb2hed)."""
    optical_density = torch.log(x.clamp(1e-6, 1.0)) / _LOG_FLOOR
    return torch.einsum("chw,cd->dhw", optical_density, _HED_FROM_RGB).clamp(min=0.0)


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """The inverse of rgb_to_hed (as skimage.color.hed2rgb)."""
    log_rgb = torch.einsum("chw,cd->dhw", hed.clamp(min=0.0) * -_LOG_FLOOR, -_RGB_FROM_HED)
    return torch.exp(log_rgb).clamp(0.0, 1.0)


def hed_jitter(x: torch.Tensor, scale: tuple[float, float, float], shift: tuple[float, float, float]) -> torch.Tensor:
    """Stain variation: each of the haematoxylin, eosin and DAB concentrations (colour deconvolution) is multiplied
    by 1 + scale[i] and moved by shift[i] of its range, as a lab's stain strength and a scanner's colour do."""
    hed = rgb_to_hed(x)
    spread = hed.amax(dim=(1, 2)) - hed.amin(dim=(1, 2)) + 1e-3
    hed = hed * (1.0 + torch.tensor(scale))[:, None, None] + (torch.tensor(shift) * spread)[:, None, None]
    return hed_to_rgb(hed)


def fluorescence_to_stained(x: torch.Tensor, haematoxylin: float, eosin: float) -> torch.Tensor:
    """A fluorescence crop (bright nuclei on dark) rendered as a brightfield stain: the nuclear signal becomes a
    haematoxylin concentration (dark purple nuclei) on a faint eosin background, so the abundant fluorescence
    images teach the look of stained slides. `haematoxylin` (at the brightest signal) and `eosin` are
    concentrations in skimage's units: 0.05 to 0.15 haematoxylin gives pale to deep purple nuclei, 0.01 to 0.03
    eosin a pink background."""
    signal = x.clamp(0.0, 1.0).mean(0)
    hed = torch.stack([signal * haematoxylin, torch.full_like(signal, eosin), torch.zeros_like(signal)])
    return hed_to_rgb(hed)


def low_magnification(x: torch.Tensor, factor: float) -> torch.Tensor:
    """A crop as a lower-magnification objective sees it, enlarged back to this size: detail finer than
    `factor` pixels is lost (factor 3: a 20x image enlarged to the 63x nucleus size)."""
    _, h, w = x.shape
    small = (max(2, int(round(h / factor))), max(2, int(round(w / factor))))
    down = F.interpolate(x[None], size=small, mode="area")
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)[0]


def low_signal(x: torch.Tensor, photons: float, read_noise: float, generator: torch.Generator) -> torch.Tensor:
    """Low signal-to-noise: shot noise as if the brightest pixel had caught `photons` photons (Poisson, in its
    Gaussian form: from 8 photons on the two differ little), plus Gaussian camera read noise of `read_noise` (in
    units of the 0..1 range). The mean stays where it was."""
    shot = torch.sqrt(x.clamp(min=0.0) / photons)
    return x + torch.randn(x.shape, generator=generator) * shot + torch.randn(x.shape, generator=generator) * read_noise


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
