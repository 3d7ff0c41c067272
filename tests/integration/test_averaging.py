"""Stochastic weight averaging: the mean of the snapshots, batch-norm statistics measured again, and a training
run that averages across a resume."""
import json

import pytest
import torch
from torch import nn

from shared.domain.training.averaging import WeightAverage


def test_the_average_is_the_mean_of_the_snapshots():
    model = nn.Conv2d(1, 1, 1, bias=True)
    average = WeightAverage(model)
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            model.weight.fill_(value), model.bias.fill_(-value)
        average.add(model)
    restored = WeightAverage(nn.Conv2d(1, 1, 1))
    restored.load_state_dict(average.state_dict())
    target = nn.Conv2d(1, 1, 1)
    restored.apply_to(target, iter(()), bn_batches=0)
    assert restored.count == 3
    assert target.weight.item() == pytest.approx(3.0) and target.bias.item() == pytest.approx(-3.0)


def test_batch_norm_statistics_are_measured_for_the_averaged_weights():
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    model[1].running_mean.fill_(100.0)  # statistics of some earlier weights: wrong for the average
    average = WeightAverage(model)
    average.add(model)
    generator = torch.Generator().manual_seed(0)
    shown = [torch.randn(4, 1, 8, 8, generator=generator) + 5 for _ in range(3)]
    model.eval()
    average.apply_to(model, iter(shown), bn_batches=3)
    assert model[1].running_mean.item() == pytest.approx(2 * torch.stack(shown).mean().item(), rel=1e-4)
    assert not model.training  # left in the mode it was in
    assert model[1].momentum == 0.1


def test_training_averages_from_the_given_step_across_a_resume(tmp_path):
    from testkit.cli import run

    out = tmp_path / "run"
    common = ["--out", out, "--batch", "2", "--crop", "64", "--base", "4", "--limit", "3", "--eval-images", "1",
              "--eval-every", "100", "--checkpoint-every", "1", "--average-from", "3"]
    run("train", "--steps", "2", *common)
    run("train", "--steps", "5", *common)
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["step"] == 5 and history[-1]["averaged"] == 3  # steps 3, 4 and 5
    final = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["average"]["count"] == 3
    for name, mean in last["average"]["mean"].items():
        assert torch.allclose(final[name], mean, atol=1e-7)
    assert any(not torch.allclose(final[name], last["state_dict"][name], atol=1e-7)
               for name in last["average"]["mean"])
