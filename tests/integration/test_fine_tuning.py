"""The trainer's fine-tuning recipe (shared.domain.training.loop.fine_tune): user labels drawn at their share, the encoder
left exactly as it was when frozen, the rest of the network trained."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from shared.infra.settings import Settings
from shared.domain.datasets.labelled import LabelledImage
from shared.domain.model.segmenter import shipped_weights_path
from shared.domain.training.loop import fine_tune, user_sample_weight

TINY = dict(training_crop=64, training_batch=2, device="cpu")


def discs(seed: int, size: int = 96) -> LabelledImage:
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(1, 9):
        cy, cx = rng.integers(12, size - 12, 2)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= 100) & (labels == 0)] = i
    image = np.where(labels > 0, 200, 20).astype(np.uint8) + rng.integers(0, 20, labels.shape).astype(np.uint8)
    return LabelledImage(f"discs-{seed}", image, labels, "fluorescence")


def state(raw: bytes) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)["state_dict"].items()}


@pytest.mark.parametrize("base, user, share", [(563, 10, 0.5), (563, 10, 0.8), (40, 3, 0.3)])
def test_user_labels_make_up_their_share_of_what_is_sampled(base, user, share):
    weight = user_sample_weight(base, user, share)
    assert user * weight / (base + user * weight) == pytest.approx(share)
    assert user_sample_weight(0, user, share) == 1.0  # user labels alone: nothing to balance


@pytest.mark.parametrize("freeze", ["encoder", "none"])
def test_a_frozen_encoder_stays_as_it_was_and_the_decoder_learns(freeze):
    parent = shipped_weights_path().read_bytes()
    settings = Settings(training_freeze=freeze, training_lr=1e-2, **TINY)
    tuned = fine_tune(parent, [discs(0), discs(1)], [discs(2)], settings, steps=3, seed=1)
    before, after = state(parent), state(tuned.weights)
    encoder = [k for k in before if k.startswith("down.")]
    decoder = [k for k in before if k.startswith(("up.", "merge.", "head."))]
    assert encoder and decoder
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if freeze == "encoder":
        assert not changed & set(encoder), sorted(changed & set(encoder))[:5]  # weights and batch-norm statistics
    else:
        assert changed & set(encoder)
    assert changed & set(decoder)
    assert tuned.steps == 3 and set(tuned.seconds) == {"prepare", "train", "export"}


def test_an_unknown_frozen_part_is_refused():
    with pytest.raises(ValueError, match="freeze must be one of"):
        fine_tune(shipped_weights_path().read_bytes(), [discs(0)], [], Settings(training_freeze="decoder", **TINY),
                  steps=1)
