"""The steps train() is made of, seen through its checkpoints: where a run stops and resumes, the learning rate
after fresh optimiser moments (a compact resume point, a widening), and what the final weights are."""
import numpy as np
import pytest
import torch

from shared.domain.datasets.labelled import LabelledImage
from shared.domain.training.loop import REWARM_STEPS, TrainConfig, compact_checkpoint, learning_rate, train


def _discs(count: int, seed: int) -> list[LabelledImage]:
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:64, :64]
    items = []
    for i in range(count):
        labels = np.zeros((64, 64), np.uint32)
        for label in range(1, 6):
            cy, cx = rng.integers(8, 56, 2)
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(16, 50)] = label
        grey = np.clip((labels > 0) * 170.0 + rng.normal(40, 10, labels.shape), 0, 255).astype(np.uint8)
        items.append(LabelledImage(f"disc-{i}", np.repeat(grey[..., None], 3, -1), labels, "fluorescence"))
    return items


def _config(steps: int, **changes) -> TrainConfig:
    tiny = dict(batch=2, crop=32, base=4, depth=2, diameter=None, eval_every=1000, checkpoint_every=1000,
                device="cpu", precision="fp32", threads=1, restarts=())
    return TrainConfig(steps=steps, **{**tiny, **changes})


def _resume_point(out) -> dict:
    return torch.load(out / "last.pt", weights_only=False)


def _lr_of(checkpoint: dict) -> float:
    return checkpoint["optimizer"]["param_groups"][0]["lr"]


@pytest.fixture(scope="module")
def images():
    return _discs(3, seed=1)


def test_a_stopped_run_resumes_where_it_stopped_and_ends_with_the_schedule(tmp_path, images):
    cfg = _config(steps=5)
    seen = []
    stopped = train(images, [], tmp_path, cfg, should_stop=lambda: len(seen) >= 2,
                    progress=lambda step, total, info: seen.append((step, total)))
    assert stopped["step"] == 2 and seen == [(1, 5), (2, 5)]
    assert _resume_point(tmp_path)["extra"]["train_state"]["step"] == 2
    assert _lr_of(_resume_point(tmp_path)) == pytest.approx(learning_rate(1, cfg))  # the rate of the last step taken

    finished = train(images, [], tmp_path, cfg)
    assert finished["step"] == 5
    assert [record["step"] for record in finished["history"]] == [5]  # evaluated at the last step only
    final = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    last = _resume_point(tmp_path)["state_dict"]
    assert all(torch.equal(final[name], last[name]) for name in final)  # no averaging: the last weights


def test_a_compact_resume_point_rewarms_the_learning_rate_and_a_full_one_does_not(tmp_path, images):
    cfg = _config(steps=2)
    train(images, [], tmp_path / "first", cfg)
    compact = tmp_path / "compact"
    compact.mkdir()
    compact_checkpoint(tmp_path / "first" / "last.pt", compact / "last.pt")
    assert "optimizer" not in torch.load(compact / "last.pt", weights_only=False)

    longer = _config(steps=3)
    train(images, [], compact, longer)
    assert _lr_of(_resume_point(compact)) == pytest.approx(learning_rate(2, longer) / REWARM_STEPS)
    train(images, [], tmp_path / "first", longer)
    assert _lr_of(_resume_point(tmp_path / "first")) == pytest.approx(learning_rate(2, longer))


def test_widening_gives_fresh_moments_that_rewarm(tmp_path, images):
    cfg = _config(steps=4, widen=((2, 6),))
    train(images, [], tmp_path, cfg)
    resumed = _resume_point(tmp_path)
    assert resumed["config"]["base"] == 6
    assert _lr_of(resumed) == pytest.approx(learning_rate(3, cfg) * 2 / REWARM_STEPS)  # second step after widening
    moments = resumed["optimizer"]["state"]
    assert moments and all(int(state["step"]) == 2 for state in moments.values())
