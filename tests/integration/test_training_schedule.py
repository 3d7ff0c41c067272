"""The learning-rate schedule (warm-up, cosine decay, the shipped recipe's warm restarts) and the loss."""
import pytest

from shared.domain.training.loop import TrainConfig, learning_rate


def test_one_cycle_warms_up_then_decays_to_two_percent():
    cfg = TrainConfig(steps=1000, lr=1e-3, restarts=())
    assert learning_rate(0, cfg) < learning_rate(49, cfg) == pytest.approx(1e-3)  # warm-up: steps // 20
    rates = [learning_rate(s, cfg) for s in range(50, 1000, 50)]
    assert rates == sorted(rates, reverse=True)
    assert learning_rate(1000, cfg) == pytest.approx(2e-5)


def test_each_restart_begins_a_new_cycle_at_its_own_peak():
    cfg = TrainConfig(steps=3000, lr=2e-3, restarts=((2000, 3e-4), (1000, 5e-4)))  # in any order
    assert learning_rate(999, cfg) == pytest.approx(2e-3 * 0.02, rel=0.01)
    assert learning_rate(1000, cfg) < learning_rate(1049, cfg) == pytest.approx(5e-4)
    assert learning_rate(1999, cfg) == pytest.approx(5e-4 * 0.02, rel=0.01)
    assert learning_rate(2000, cfg) < learning_rate(2049, cfg) == pytest.approx(3e-4)
    assert learning_rate(3000, cfg) == pytest.approx(3e-4 * 0.02)


def test_restarts_past_the_end_are_ignored():
    short = TrainConfig(steps=300)  # the default restarts (steps 5000 and 10500) lie beyond a short run
    assert learning_rate(300, short) == pytest.approx(learning_rate(300, TrainConfig(steps=300, restarts=())))
    assert learning_rate(300, short) == pytest.approx(short.lr * 0.02)


def test_mistakes_where_nuclei_touch_cost_more_with_a_contact_weight():
    import numpy as np
    import torch

    from shared.domain.training.loop import loss_fn, training_targets

    labels = np.zeros((32, 48), np.uint16)
    labels[8:24, 6:22], labels[8:24, 22:38] = 1, 2  # two nuclei sharing an edge at column 22
    target = torch.from_numpy(training_targets(labels).astype(np.float32))[None]
    perfect = (target[:, :3] * 40 - 20).clone()
    wrong_at_contact = perfect.clone()
    wrong_at_contact[:, 2, 8:24, 20:25] = 20.0  # the distance map joins the two nuclei
    wrong_elsewhere = perfect.clone()
    wrong_elsewhere[:, 2, 8:24, 8:13] = -20.0  # as many pixels wrong inside a nucleus, away from the contact
    for weight in (0.0, 4.0):
        base = loss_fn(perfect, target, weight)
        assert loss_fn(wrong_at_contact, target, weight) > base
    plain = loss_fn(wrong_at_contact, target, 0.0) / loss_fn(wrong_elsewhere, target, 0.0)
    weighted = loss_fn(wrong_at_contact, target, 4.0) / loss_fn(wrong_elsewhere, target, 4.0)
    assert weighted > 2 * plain


def test_crops_are_drawn_from_each_image_type_as_often_as_its_weight_says():
    import random

    import numpy as np

    from shared.domain.datasets.labelled import LabelledImage
    from shared.domain.training.loop import batches, prepare

    image = np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    empty = LabelledImage("no-nuclei", image, np.zeros((64, 64), np.uint16), "fluorescence")
    full = LabelledImage("all-nucleus", image, np.ones((64, 64), np.uint16), "brightfield")
    samples = prepare([empty, full], diameter=None)

    def brightfield_share(cfg):
        stream = batches(samples, cfg, random.Random(0))
        drawn = [next(stream)[1] for _ in range(8)]
        return float(np.mean([(y[:, 0] > 0.5).flatten(1).any(1).float().mean() for y in drawn]))

    recipe = TrainConfig(batch=50, crop=32, diameter=None)
    assert dict(recipe.kind_weights)["brightfield"] == 3.0
    assert 0.70 < brightfield_share(recipe) < 0.80  # 3 / (3 + 1)
    heavier = TrainConfig(batch=50, crop=32, diameter=None, kind_weights=(("fluorescence", 1.0), ("brightfield", 9.0)))
    assert 0.86 < brightfield_share(heavier) < 0.94  # 9 / (9 + 1)
