"""The learning-rate schedule: warm-up, cosine decay, and the shipped recipe's one warm restart."""
import pytest

from shared.training import TrainConfig, learning_rate


def test_one_cycle_warms_up_then_decays_to_two_percent():
    cfg = TrainConfig(steps=1000, lr=1e-3, restart_at=0)
    assert learning_rate(0, cfg) < learning_rate(49, cfg) == pytest.approx(1e-3)  # warm-up: steps // 20
    rates = [learning_rate(s, cfg) for s in range(50, 1000, 50)]
    assert rates == sorted(rates, reverse=True)
    assert learning_rate(1000, cfg) == pytest.approx(2e-5)


def test_the_restart_begins_a_second_cycle_at_its_own_peak():
    cfg = TrainConfig(steps=2000, lr=2e-3, restart_at=1000, restart_lr=5e-4)
    assert learning_rate(999, cfg) == pytest.approx(2e-3 * 0.02, rel=0.01)
    assert learning_rate(1000, cfg) < learning_rate(1049, cfg) == pytest.approx(5e-4)
    assert learning_rate(2000, cfg) == pytest.approx(5e-4 * 0.02)


def test_a_restart_past_the_end_is_ignored():
    short = TrainConfig(steps=300)  # the default restart (step 5000) lies beyond a short run
    assert learning_rate(300, short) == pytest.approx(learning_rate(300, TrainConfig(steps=300, restart_at=0)))
    assert learning_rate(300, short) == pytest.approx(short.lr * 0.02)
