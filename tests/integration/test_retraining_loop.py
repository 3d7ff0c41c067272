"""The retraining loop on real parts: `nucleus up` (API, worker, trainer, file-system broker, SQLite,
local object store) with a tiny training budget, driven over HTTP as a scientist and an admin would.

labels uploaded -> forced run -> new version published and active -> the next job reports it;
rollback -> the next job reports the old version again; a run on scrambled labels -> recorded and
published, not promoted.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from testkit import data
from testkit.http import Client
from testkit.lines import scrambled_labels
from testkit.pipeline import weights_overrides
from testkit.stack import EmbeddedStack
from testkit.wait import wait_for
from testkit.api import png_bytes

# A budget that finishes a run in well under a minute on 2 cores: two steps per epoch on 96-pixel crops. The base
# set is as large as the trainer needs to fit the new version's size model (shared.domain.model.size.MIN_FIT_IMAGES).
BASE_IMAGES = 50
TINY_BUDGET = dict(training_steps_per_epoch=2, training_base_limit=BASE_IMAGES, training_validation_limit=3,
                   training_crop=96, training_batch=2)
# With the default learning rate, a few steps on scrambled labels barely move the model and the gate
# (rightly) lets it through. The rate the shipped model was trained with (2e-3), with user labels
# making up nearly every sample, takes the scrambled run from the shipped model's ~0.45 validation
# DSB score to ~0, far beyond the tolerance. The scrambled run starts from the shipped model: a
# 2-step forced run is too noisy a parent (its score on 3 images ranges from ~0 to ~0.5).
SCRAMBLED_EPOCHS = 10
GATE_SETTINGS = dict(training_user_share=0.97, training_lr=2e-3)
RUN_TIMEOUT = 420


def small_base_set(root: Path) -> Path:
    """A base set of links to real DSB images: BASE_IMAGES to train on and 3 from the fixed validation split,
    all 256x256 fluorescence (the default limits would take the split's first images, 1024x1024
    brightfield: slow to score). The user images (dsb_samples) are not among them."""
    validation = data.pick("fluorescence", 256, 256, n=7)[4:]
    held = data.validation_ids()
    train = [s for s in data.load_index() if s.kind == "fluorescence" and s.width == 256 and s.height == 256
             and s.image_id not in held][:BASE_IMAGES]
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for sample in validation + train:
        (root / "images" / sample.path.name).symlink_to(sample.path)
        (root / "labels" / sample.labels_path.name).symlink_to(sample.labels_path)
    return root


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = small_base_set(tmp_path_factory.mktemp("base"))
    with EmbeddedStack(tmp_path_factory.mktemp("retrain"), training_base_dir=base, **TINY_BUDGET, **GATE_SETTINGS,
                       **weights_overrides()) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack) -> Client:
    return Client(stack.url, stack.token)


def upload_and_wait(client: Client, experiment: str, filename: str, data: bytes) -> dict:
    response = client.upload(experiment, [(filename, data)])
    assert response.status_code == 202, response.text
    image = response.json()["images"][0]
    job = client.wait_job(image["job_id"], timeout=180)
    assert job["status"] == "done", job
    result = client.get(f"/api/v1/images/{image['id']}/result").json()
    return {"image_id": image["id"], "model_version": result["model_version"], "count": result["count"]}


def post_labels(client: Client, image_id: str, data: bytes) -> dict:
    response = client.post(f"/api/v1/images/{image_id}/labels", files={"file": ("labels.png", data, "image/png")})
    assert response.status_code == 201, response.text
    return response.json()


def run_to_end(client: Client, stack: EmbeddedStack, **body) -> dict:
    response = client.post("/api/v1/training-runs", json=body)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    seen = []

    def finished():
        run = client.get(f"/api/v1/training-runs/{run_id}").json()
        seen.append((run["status"], run["progress"]))
        return run if run["status"] in ("done", "failed") else None

    try:
        run = wait_for(finished, timeout=RUN_TIMEOUT, interval=1.0, message=f"training run {run_id}")
    except TimeoutError:
        raise AssertionError(f"run {run_id} did not finish; seen {seen[-5:]}; log:\n{stack.log_tail()}") from None
    assert run["status"] == "done", f"{run}\n{stack.log_tail()}"
    return run


def scrambled(height: int, width: int, seed: int) -> bytes:
    return png_bytes(scrambled_labels(height, width, seed))


def active_version(client: Client) -> str:
    models = client.get("/api/v1/models?per_page=1000").json()["models"]
    active = [m["version"] for m in models if m["active"]]
    assert len(active) == 1, models
    return active[0]


@pytest.fixture(scope="module")
def loop(client, stack, dsb_samples):
    """Images with real labels, then one forced run; what the later tests build on."""
    assert client.create_experiment("retrain").status_code == 201
    before = [upload_and_wait(client, "retrain", s.path.name, s.path.read_bytes()) for s in dsb_samples[:3]]
    shipped = before[0]["model_version"]
    assert {b["model_version"] for b in before} == {shipped}
    for sample, image in zip(dsb_samples, before):
        assert post_labels(client, image["image_id"], sample.labels_path.read_bytes())["count"] == sample.count
    listed = client.get("/api/v1/experiments/retrain/labels").json()
    assert listed["total"] == 3

    run = run_to_end(client, stack, epochs=1, force_promote=True)
    return {"shipped": shipped, "images": before, "run": run}


def test_a_forced_run_publishes_a_version_that_the_next_job_reports(client, stack, loop, dsb_samples):
    from shared.domain.model.segmenter import fine_tuning_config, shipped_weights_path

    run = loop["run"]
    assert run["version"] and run["version"] != loop["shipped"]
    published = (stack.data_dir / "objects" / "models" / f"{run['version']}.pt").read_bytes()
    # fine-tuned at the nucleus size its parent was trained at (so the worker enlarges images the same way), and
    # with its parent's network shape
    parent, child = fine_tuning_config(shipped_weights_path().read_bytes()), fine_tuning_config(published)
    assert parent["diameter"] and all(child[key] == parent[key] for key in ("diameter", "base", "depth"))
    assert run["promoted"] is True and run["progress"] == 1.0
    assert run["metrics"]["validation"] and "dsb_score" in run["metrics"]["validation"]

    models = {m["version"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert models[run["version"]]["active"] is True
    assert models[run["version"]]["parent"] == loop["shipped"]
    summary = models[run["version"]]["training_summary"]
    assert summary["user_images"] + summary["user_held_out"] == 3
    # the new version measures nuclei with a size model fitted for it, on every image it was trained on
    assert summary["size_model_images"] == summary["base_images"] + summary["user_images"] >= BASE_IMAGES
    fitted = torch.load(io.BytesIO(published), map_location="cpu", weights_only=True)["size"]
    shipped_size = torch.load(shipped_weights_path(), map_location="cpu", weights_only=True)["size"]
    assert fitted and fitted["coef"] != shipped_size["coef"]
    assert loop["shipped"] in models and models[loop["shipped"]]["active"] is False

    after = upload_and_wait(client, "retrain", "after.png", dsb_samples[3].path.read_bytes())
    assert after["model_version"] == run["version"]


def test_rollback_switches_the_next_job_back(client, loop, dsb_samples):
    back = client.post(f"/api/v1/models/{loop['shipped']}/activate")
    assert back.status_code == 200 and back.json()["active"] is True
    assert active_version(client) == loop["shipped"]
    image = np.asarray(np.clip(np.random.default_rng(7).normal(20, 5, (128, 128)), 0, 255), np.uint8)
    image[40:60, 40:60] = 200
    result = upload_and_wait(client, "retrain", "rolled-back.png", png_bytes(image))
    assert result["model_version"] == loop["shipped"]
    # and forward again
    assert client.post(f"/api/v1/models/{loop['run']['version']}/activate").status_code == 200
    image[80:100, 80:100] = 220
    forward = upload_and_wait(client, "retrain", "forward.png", png_bytes(image))
    assert forward["model_version"] == loop["run"]["version"]


def test_a_run_on_scrambled_labels_is_recorded_but_not_promoted(client, stack, loop):
    parent = loop["shipped"]
    assert client.post(f"/api/v1/models/{parent}/activate").status_code == 200
    for i, image in enumerate(loop["images"]):
        post_labels(client, image["image_id"], scrambled(256, 256, seed=i))
    run = run_to_end(client, stack, epochs=SCRAMBLED_EPOCHS, force_promote=False)
    assert run["version"] and run["version"] not in (parent, loop["run"]["version"])
    assert run["promoted"] is False, run["metrics"]
    # its one held-out image carries scrambled labels too, so the base validation split's guard is what catches it
    assert run["metrics"]["gate_passed"] is False and run["metrics"]["decision"] == "rejected"
    lost = [check for check in run["metrics"]["checks"] if not check["passed"]]
    assert lost and all(check["drop"] > check["tolerance"] for check in lost)
    models = {m["version"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert models[run["version"]]["active"] is False and models[run["version"]]["parent"] == parent
    assert active_version(client) == parent


def trainer_pid(stack: EmbeddedStack) -> int | None:
    for pid in stack.group_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"services.trainer.app" in cmdline:
            return pid
    return None


def test_a_trainer_killed_mid_run_leaves_no_half_published_version(client, stack, loop):
    import os
    import signal

    versions_before = {m["version"] for m in client.get("/api/v1/models?per_page=1000").json()["models"]}
    response = client.post("/api/v1/training-runs", json={"epochs": 15, "force_promote": True})
    assert response.status_code == 202
    run_id = response.json()["id"]
    wait_for(lambda: client.get(f"/api/v1/training-runs/{run_id}").json()["progress"] > 0, timeout=RUN_TIMEOUT,
             interval=0.5, message="the run to be under way")
    killed = trainer_pid(stack)
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: (trainer_pid(stack) or killed) != killed, timeout=60, message="the trainer to be restarted")

    run = wait_for(lambda: (lambda r: r if r["status"] in ("done", "failed") else None)(
        client.get(f"/api/v1/training-runs/{run_id}").json()), timeout=RUN_TIMEOUT, interval=1.0,
        message="the interrupted run to finish after the restart")
    assert run["status"] == "done" and run["promoted"] is True, run
    models = client.get("/api/v1/models?per_page=1000").json()["models"]
    new = {m["version"] for m in models} - versions_before
    assert new == {run["version"]}  # the killed attempt published nothing
    for model in models:  # no registry row without its weights
        assert (stack.data_dir / "objects" / "models" / f"{model['version']}.pt").is_file(), model["version"]
