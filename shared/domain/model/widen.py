"""Widening a trained U-Net without changing what it computes (Net2WiderNet, Chen et al. 2016).

Each new channel copies an existing one (its incoming weights and batch-norm parameters); every layer that reads
the copies shares the original's outgoing weights among them. Since ReLU(BN(conv)) of a copy is the copy of the
original's, the wider network's output equals the narrow one's, and training starts from what the narrow network
had learned instead of from scratch. The shares are unequal at random so that the copies receive different
gradients and grow apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.domain.model.unet import UNet


@dataclass
class Expansion:
    """How the channels of one activation grow: new channel j copies old channel `source[j]`, and a reader of the
    activation weighs it by `share[j]` (the shares of one old channel's copies sum to 1)."""
    source: torch.Tensor
    share: torch.Tensor

    @classmethod
    def identity(cls, n: int) -> "Expansion":
        return cls(torch.arange(n), torch.ones(n))

    @classmethod
    def random(cls, old: int, new: int, rng: np.random.Generator) -> "Expansion":
        source = np.concatenate([np.arange(old), rng.integers(0, old, new - old)])
        weight = rng.uniform(0.8, 1.2, new)
        total = np.bincount(source, weights=weight, minlength=old)
        return cls(torch.from_numpy(source), torch.from_numpy(weight / total[source]).float())

    def then(self, other: "Expansion", old_offset: int) -> "Expansion":
        """This activation concatenated with `other`, whose old channels start at `old_offset`."""
        return Expansion(torch.cat([self.source, other.source + old_offset]), torch.cat([self.share, other.share]))


def widen(model: UNet, base: int, seed: int = 0) -> UNet:
    """A U-Net `base` channels wide at full resolution that computes what `model` computes."""
    config = model.config
    if base < config["base"]:
        raise ValueError(f"cannot widen a U-Net of width {config['base']} to {base}")
    rng = np.random.default_rng(seed)
    wide = UNet(in_channels=config["in_channels"], base=base, depth=config["depth"])
    old, new = model.state_dict(), {}

    def grow(width: int) -> Expansion:
        return Expansion.random(width, width * base // config["base"], rng)

    def conv(name: str, reads: Expansion, writes: Expansion, transposed: bool = False) -> None:
        weight = old[f"{name}.weight"]
        if transposed:  # (in, out, kh, kw)
            weight = weight[reads.source][:, writes.source] * reads.share[:, None, None, None]
        else:  # (out, in, kh, kw)
            weight = weight[writes.source][:, reads.source] * reads.share[None, :, None, None]
        new[f"{name}.weight"] = weight
        if f"{name}.bias" in old:
            new[f"{name}.bias"] = old[f"{name}.bias"][writes.source]

    def batch_norm(name: str, writes: Expansion) -> None:
        for key in ("weight", "bias", "running_mean", "running_var"):
            new[f"{name}.{key}"] = old[f"{name}.{key}"][writes.source]
        new[f"{name}.num_batches_tracked"] = old[f"{name}.num_batches_tracked"]

    def block(name: str, reads: Expansion, width: int) -> Expansion:
        first, second = grow(width), grow(width)
        conv(f"{name}.0", reads, first)
        batch_norm(f"{name}.1", first)
        conv(f"{name}.3", first, second)
        batch_norm(f"{name}.4", second)
        return second

    widths = [config["base"] * 2**i for i in range(config["depth"] + 1)]
    skips, x = [], Expansion.identity(config["in_channels"])
    for i, width in enumerate(widths):
        x = block(f"down.{i}", x, width)
        skips.append(x)
    skips.pop()
    for k in range(config["depth"]):
        width = widths[config["depth"] - 1 - k]
        upsampled = grow(width)
        conv(f"up.{k}", x, upsampled, transposed=True)
        x = block(f"merge.{k}", upsampled.then(skips.pop(), old_offset=width), width)
    conv("head", x, Expansion.identity(len(old["head.bias"])))
    wide.load_state_dict(new)
    return wide
