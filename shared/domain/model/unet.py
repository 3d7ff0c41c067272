"""A compact U-Net that predicts what instance separation needs.

Three output maps per pixel (logits):
  0. foreground: is this pixel inside any nucleus;
  1. boundary:   is this pixel on the rim of a nucleus (where touching nuclei meet);
  2. distance:   distance to the nucleus edge, normalised to 1 at each nucleus' centre.
The distance map gives one seed per nucleus, the foreground map the extent, and the boundary
map keeps seeds of touching nuclei apart (see shared.domain.segmentation.postprocess).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

OUTPUTS = ("foreground", "boundary", "distance")


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, base: int = 16, depth: int = 4):
        super().__init__()
        self.config = {"in_channels": in_channels, "base": base, "depth": depth}
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([ConvBlock(in_channels, widths[0])])
        self.down.extend(ConvBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.merge = nn.ModuleList(ConvBlock(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], len(OUTPUTS), 1)

    @property
    def stride(self) -> int:
        """Input sides must be a multiple of this."""
        return 2 ** self.config["depth"]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features at each level, full resolution first."""
        features = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
