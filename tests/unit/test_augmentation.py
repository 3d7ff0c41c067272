"""The robustness transforms (shared.domain.training.augmentation): shapes and ranges kept, labels untouched, each doing what its
name says on small synthetic crops."""
import random

import numpy as np
import pytest
import torch
from skimage.color import hed2rgb

from shared.domain.training import augmentation as aug
from shared.domain.training.loop import Sample, TrainConfig, augment, training_targets


def disc_labels(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for i, (cy, cx) in enumerate([(16, 16), (16, 46), (44, 30)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 8 ** 2] = i
    return labels


def fluorescence_crop(size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    labels = disc_labels(size)
    x = torch.full((3, size, size), 0.05)
    x[:, torch.from_numpy(labels > 0)] = 0.9
    return x, labels


def he_crop(size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """Purple nuclei on a pink background, made in skimage's HED space."""
    labels = disc_labels(size)
    hed = np.zeros((size, size, 3))
    hed[..., 1] = 0.02
    hed[labels > 0, 0] = 0.1
    rgb = hed2rgb(hed)
    return torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32)), labels


def inside_outside(x: torch.Tensor, labels: np.ndarray) -> tuple[float, float]:
    grey = x.mean(0).numpy()
    return float(grey[labels > 0].mean()), float(grey[labels == 0].mean())


def test_hed_jitter_changes_the_stain_but_nuclei_stay_darker_than_background():
    x, labels = he_crop()
    rng = random.Random(1)
    changed = []
    for _ in range(20):
        scale = tuple(rng.uniform(-0.3, 0.3) for _ in range(3))
        shift = tuple(rng.uniform(-0.05, 0.05) for _ in range(3))
        out = aug.hed_jitter(x, scale, shift)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        inside, outside = inside_outside(out, labels)
        assert inside < outside - 0.1
        changed.append(float((out - x).abs().max()))
    assert min(changed) > 0.01
    identity = aug.hed_jitter(x, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    assert torch.allclose(identity, x, atol=2e-3)


def test_colour_deconvolution_matches_skimage():
    from skimage.color import rgb2hed

    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    hed = aug.rgb_to_hed(x)
    assert np.allclose(hed.permute(1, 2, 0).numpy(), rgb2hed(x.permute(1, 2, 0).numpy().astype(np.float64)), atol=1e-5)
    stains = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(4)) * 0.1  # colours a stain can make
    assert torch.allclose(aug.rgb_to_hed(aug.hed_to_rgb(stains)), stains, atol=1e-4)


def test_fluorescence_rendered_as_stained_has_dark_purple_nuclei_on_a_light_background():
    x, labels = fluorescence_crop()
    out = aug.fluorescence_to_stained(x, haematoxylin=0.1, eosin=0.02)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    inside, outside = inside_outside(out, labels)
    assert outside > 0.8 and inside < outside - 0.3
    nucleus = out[:, 16, 16]
    assert nucleus[2] > nucleus[1]  # blue over green: purple, not grey


def test_low_magnification_loses_fine_detail_only():
    checker = torch.from_numpy(((np.indices((64, 64)).sum(0) % 2) * 1.0).astype(np.float32)).expand(3, -1, -1)
    out = aug.low_magnification(checker.clone(), 2.0)
    assert out.shape == checker.shape
    assert float(out.std()) < 0.1 * float(checker.std())  # one-pixel detail gone
    assert abs(float(out.mean()) - float(checker.mean())) < 0.02
    x, labels = fluorescence_crop()
    inside, outside = inside_outside(aug.low_magnification(x, 3.0), labels)
    assert inside > outside + 0.5  # nuclei of 16 px still there


def test_low_signal_adds_noise_that_grows_as_photons_fall_and_keeps_the_mean():
    x, _ = fluorescence_crop()
    errors = []
    for photons in (200.0, 10.0):
        out = aug.low_signal(x, photons, 0.01, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert abs(float(out.mean()) - float(x.mean())) < 0.02
        errors.append(float((out - x).std()))
    assert errors[1] > 2 * errors[0] > 0
    again = aug.low_signal(x, 10.0, 0.01, torch.Generator().manual_seed(0))
    assert torch.equal(again, aug.low_signal(x, 10.0, 0.01, torch.Generator().manual_seed(0)))


def test_uneven_background_is_smooth_and_keeps_nuclei_brighter_than_their_surroundings():
    x, labels = fluorescence_crop()
    assert torch.allclose(aug.uneven_background(x, (0.0, 0.0), 0.0, 0.0), x)
    flat = torch.full((3, 64, 64), 0.5)
    out = aug.uneven_background(flat, (0.6, -0.6), 0.5, 0.2)
    assert out.shape == flat.shape
    assert float(out.max() - out.min()) > 0.1  # uneven
    assert float(out[0].diff(dim=0).abs().max()) < 0.05 and float(out[0].diff(dim=1).abs().max()) < 0.05  # smooth
    shaded = aug.uneven_background(x, (0.6, -0.6), 0.5, 0.2)
    for cy, cx in [(16, 16), (16, 46), (44, 30)]:
        assert float(shaded[0, cy, cx]) > float(shaded[0, cy, cx + 12]) + 0.3


def test_apply_refuses_unknown_names_and_does_nothing_at_probability_zero():
    x, _ = fluorescence_crop()
    with pytest.raises(ValueError, match="unknown augmentation 'sepia'"):
        aug.apply(x, "fluorescence", {"sepia": 1.0}, random.Random(0))
    none = aug.apply(x, "fluorescence", {name: 0.0 for name in aug.TRANSFORMS}, random.Random(0))
    assert torch.equal(none, x)


def test_training_crops_keep_their_targets_in_place_under_every_transform():
    """augment() with all robust transforms on: the targets are those of the same crop without them, and the
    image still shows the nuclei where the foreground target has them."""
    for kind, (x, labels) in (("fluorescence", fluorescence_crop(96)), ("stained", he_crop(96))):
        sample = Sample(x.numpy().astype(np.float16), training_targets(labels), kind)
        cfg = TrainConfig(crop=64, scale_range=(1.0, 1.0), robust_augment=tuple((n, 1.0) for n in aug.TRANSFORMS))
        for seed in range(4):
            image, targets = augment(sample, cfg, random.Random(seed))
            plain = TrainConfig(crop=64, scale_range=(1.0, 1.0))
            _, plain_targets = augment(sample, plain, random.Random(seed))
            assert image.shape == (3, 64, 64) and targets.shape == plain_targets.shape == (4, 64, 64)
            assert torch.equal(targets, plain_targets)  # same crop, turns and flips: the transforms move no pixel
            # Local contrast (the image less its smooth background, with noise averaged out) against the foreground.
            grey = image.mean(0)[None, None]
            pool = torch.nn.functional.avg_pool2d
            local = pool(grey, 3, 1, 1, count_include_pad=False) - pool(grey, 21, 1, 10, count_include_pad=False)
            assert abs(np.corrcoef(local.flatten().numpy(), targets[0].flatten().numpy())[0, 1]) > 0.4


def test_the_recipe_records_the_transforms():
    from dataclasses import asdict
    cfg = TrainConfig(robust_augment=(("stain", 0.5), ("noise", 0.2)))
    assert asdict(cfg)["robust_augment"] == (("stain", 0.5), ("noise", 0.2))
    assert TrainConfig().robust_augment == ()
