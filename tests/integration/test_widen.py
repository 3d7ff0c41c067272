"""Widening a trained U-Net: the wider network computes what the narrow one did, its copies grow apart under
training, and `nucleus train --init` widens narrower weights when asked for a wider network."""
import pytest
import torch

from shared.domain.model.unet import UNet
from shared.domain.model.widen import widen


def _trained_like(base: int) -> UNet:
    """A U-Net whose batch-norm statistics and parameters are not the defaults, as a trained one's are not."""
    torch.manual_seed(0)
    model = UNet(base=base, depth=3)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith(("running_mean", ".bias")) or "1.weight" in name or "4.weight" in name:
                tensor.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("base", [6, 8, 13])
def test_the_wider_network_computes_what_the_narrow_one_did(base, mode):
    narrow = _trained_like(4)
    wide = widen(narrow, base, seed=1)
    assert wide.config == {**narrow.config, "base": base}
    assert wide.down[0][0].out_channels == base and wide.head.in_channels == base
    getattr(narrow, mode)(), getattr(wide, mode)()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = narrow(x), wide(x)
    assert expected.abs().max() > 0.1
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_the_copies_of_a_channel_learn_differently():
    wide = widen(_trained_like(4), 8, seed=1)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    wide(x).square().mean().backward()
    grad = wide.down[0][0].weight.grad  # channels 4-7 copy four of channels 0-3
    copies = [(j, i) for j in range(4, 8) for i in range(4)
              if torch.equal(wide.down[0][0].weight[j], wide.down[0][0].weight[i])]
    assert len(copies) == 4
    for j, i in copies:
        assert not torch.allclose(grad[j], grad[i])


def test_a_network_is_never_narrowed():
    with pytest.raises(ValueError, match="cannot widen"):
        widen(UNet(base=8, depth=2), 4)


def test_train_widens_narrower_initial_weights(tmp_path):
    from testkit.cli import run

    narrow = tmp_path / "narrow"
    common = ["--batch", "2", "--crop", "64", "--limit", "3", "--eval-images", "1", "--eval-every", "100"]
    run("train", "--out", narrow, "--steps", "1", "--base", "4", *common)
    wide = tmp_path / "wide"
    run("train", "--out", wide, "--steps", "1", "--base", "6", "--init", narrow / "model.pt", "--lr", "0", *common)
    narrow_model = UNet(**torch.load(narrow / "model.pt", weights_only=False)["config"])
    narrow_model.load_state_dict(torch.load(narrow / "model.pt", weights_only=False)["state_dict"])
    expected = widen(narrow_model, 6, seed=0).state_dict()  # the run's seed
    saved = torch.load(wide / "model.pt", weights_only=False)
    assert saved["config"]["base"] == 6
    learned = [name for name in expected if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for name in learned:  # a step at learning rate 0 moves only the batch-norm statistics
        assert torch.equal(saved["state_dict"][name], expected[name]), name


def test_a_run_widens_at_the_given_step_across_a_resume(tmp_path):
    from testkit.cli import run

    out = tmp_path / "run"
    common = ["--out", out, "--batch", "2", "--crop", "64", "--base", "4", "--widen-at", "2", "--widen-to", "6",
              "--limit", "3", "--eval-images", "1", "--eval-every", "100", "--checkpoint-every", "1"]

    def width(name: str) -> int:
        return torch.load(out / name, weights_only=False)["config"]["base"]

    run("train", "--steps", "2", *common)
    assert width("last.pt") == width("model.pt") == 4  # stopped just before the widening
    run("train", "--steps", "3", *common)
    assert width("last.pt") == width("model.pt") == 6
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["optimizer"]["state"][0]["exp_avg"].shape[0] == 6  # moments of the wide network's first convolution
    run("train", "--steps", "4", *common)  # resumes wide
    assert width("model.pt") == 6
    assert torch.load(out / "last.pt", weights_only=False)["extra"]["train_state"]["step"] == 4
