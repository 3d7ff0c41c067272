"""Stochastic weight averaging (Izmailov et al., 2018): the mean of the weights a run passes through.

A run that keeps a non-vanishing learning rate wanders around a wide minimum; the mean of its snapshots sits nearer
the centre and tends to generalise better than any one of them. Batch-norm statistics do not average (each
snapshot's belong to its own weights), so they are measured again on training batches for the averaged weights.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn


class WeightAverage:
    """The running mean of a model's parameters, updated one snapshot at a time."""

    def __init__(self, model: nn.Module):
        self.mean = {name: p.detach().float().clone() for name, p in model.named_parameters()}
        self.count = 0

    def add(self, model: nn.Module) -> None:
        self.count += 1
        with torch.no_grad():
            for name, p in model.named_parameters():
                self.mean[name] += (p.detach().float() - self.mean[name]) / self.count

    def state_dict(self) -> dict:
        return {"mean": {k: v.cpu() for k, v in self.mean.items()}, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean = {k: v.to(self.mean[k].device) for k, v in state["mean"].items()}
        self.count = state["count"]

    def apply_to(self, model: nn.Module, batches: Iterator[torch.Tensor], bn_batches: int) -> None:
        """Put the averaged weights into `model` and re-measure its batch-norm statistics on `bn_batches` batches."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.mean[name].to(p.dtype))
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative mean over all the batches shown
        was_training = model.training
        model.train()
        with torch.no_grad():
            for _ in range(bn_batches):
                model(next(batches))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
