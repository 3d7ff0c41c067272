"""How large an image's nuclei are, read off the network's encoder before it segments (Cellpose's size model).

Inference resizes each image so that its median nucleus reaches the diameter the network was trained at
(shared.domain.model.scale), so it must first know that median. Segmenting the image once and measuring the result
reads nuclei the network merged as one large nucleus, exactly on the images of small, packed nuclei that most
need enlarging. Instead, as Cellpose does, a ridge regression maps statistics of the encoder's features (the
mean and spread of each channel at each level) to the log of the median nucleus diameter. It is fitted on
labelled images shown at several zooms, so it learns what nuclei of each size look like to this network, and
it costs one pass of the encoder over at most the central WINDOW x WINDOW pixels: no decoder, no
post-processing. The fitted coefficients travel inside the weights file, refitted whenever weights are exported.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from shared.domain.datasets.labelled import LabelledImage
from shared.domain.model import scale
from shared.domain.model.preprocess import normalize
from shared.domain.model.size_model import WINDOW, SizeModel, central_window, is_blank  # noqa: F401 (the size model's names)
from shared.domain.model.unet import UNet

# Each fitting image is shown at these zooms, so that the regression sees nuclei of 0.6-1.6x every size in the set.
ZOOMS = (0.6, 0.8, 1.0, 1.25, 1.6)
# Fitted on fewer labelled images, its diameters err more than a quick segmentation's (cross-validated on the
# training split; shared/weights/MODEL_CARD.md, "Size model").
MIN_FIT_IMAGES = 50

StyleFn = Callable[[torch.Tensor], np.ndarray]


class EncoderStyle(nn.Module):
    """A U-Net's encoder reduced to one vector per image: each channel's mean and standard deviation at every level."""

    def __init__(self, unet: UNet):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = []
        for features in self.unet.encode(x):
            stats += [features.mean(dim=(2, 3)), features.std(dim=(2, 3), correction=0)]
        return torch.cat(stats, dim=1)


def zoomed_window(x: torch.Tensor, zoom: float, side: int = WINDOW) -> torch.Tensor:
    """What the size model sees of `x` enlarged `zoom` times: only the part that lands in the central window
    is resized."""
    source = central_window(x, math.ceil(side / zoom) + 2)
    return central_window(scale.resize_maps(source, scale.scaled_size(*source.shape[1:], zoom)), side)


class TooFewImages(ValueError):
    """Fewer than MIN_FIT_IMAGES labelled images with nuclei: a size model fitted on them would measure worse
    than a quick segmentation."""


def fit(style: StyleFn, items: Sequence[LabelledImage], zooms: Sequence[float] = ZOOMS,
        progress: Callable[[], None] | None = None) -> SizeModel:
    """Fit a size model for the network behind `style` (a normalised CxHxW image -> its style vector) on
    labelled images, one encoder pass per image and zoom; images without nuclei teach it nothing and are skipped.
    On the DSB2018 training split, 300 images or more fit it about a tenth better than 200 (cross-validated)."""
    measured_items = [(it, d) for it in items if (d := scale.median_diameter(it.labels)) > 0]
    if len(measured_items) < MIN_FIT_IMAGES:
        raise TooFewImages(f"fitting a size model needs at least {MIN_FIT_IMAGES} labelled images with nuclei, "
                           f"not {len(measured_items)}")
    styles, diameters = [], []
    for item, measured in measured_items:
        x = torch.from_numpy(normalize(item.image))
        for zoom in zooms:
            styles.append(style(zoomed_window(x, zoom)))
            diameters.append(measured * zoom)
        if progress:
            progress()
    return SizeModel.fit(np.stack(styles), np.array(diameters))
