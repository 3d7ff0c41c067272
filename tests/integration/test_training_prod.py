"""A training run on the production configuration (gunicorn API, Celery trainer on a throwaway Redis, a throwaway
PostgreSQL, moto's S3 server) where the base set and its validation split exist only in the object store, put
there by `nucleus dataset import`, as in a pip or docker deployment without ../shared/data."""
from __future__ import annotations

import subprocess
import sys

import pytest

from testkit import data
from testkit.http import Client
from testkit.pipeline import weights_overrides
from testkit.stack_prod import ProdStack, Service
from testkit.wait import wait_for

TRAIN_IMAGES, VALIDATION_IMAGES = 6, 2
TINY_BUDGET = dict(training_steps_per_epoch=2, training_crop=96, training_batch=2)
RUN_TIMEOUT = 300


def handful(root):
    """A pairs-layout folder linking 6 training and 2 validation-split DSB images (256x256 fluorescence)."""
    held = data.validation_ids()
    small = [s for s in data.load_index() if s.kind == "fluorescence" and s.width == 256 and s.height == 256]
    chosen = [s for s in small if s.image_id not in held][:TRAIN_IMAGES] + [s for s in small if s.image_id in held][
        :VALIDATION_IMAGES]
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for sample in chosen:
        (root / "images" / sample.path.name).symlink_to(sample.path)
        (root / "labels" / sample.labels_path.name).symlink_to(sample.labels_path)
    return root, chosen


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from nucleus.commands.up import child_commands

    stack = ProdStack(tmp_path_factory.mktemp("prod-train"), workers=1, settings={**TINY_BUDGET, **weights_overrides()})
    stack.start()
    no_local_data = tmp_path_factory.mktemp("no-shared-data")  # the trainer must not find ../shared/data
    trainer = Service("trainer", child_commands(stack.port, "127.0.0.1", 1)["trainer"], stack.root / "trainer.log")
    trainer.start({**stack.env, "NUCLEUS_DATA_ROOT": str(no_local_data)}, stack.root)
    try:
        stack.wait_worker_ready(trainer)
        stack.trainer = trainer
        yield stack
    finally:
        trainer.stop()
        stack.stop()


def test_a_run_trains_on_the_base_set_from_the_object_store(stack, tmp_path):
    root, chosen = handful(tmp_path / "base")
    env = {**stack.env, "NUCLEUS_S3_ENDPOINT": stack.moto.endpoint}  # as an admin would, not through the test proxy
    imported = subprocess.run([sys.executable, "-m", "nucleus.cli", "dataset", "import", str(root)], env=env,
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert f"{TRAIN_IMAGES + VALIDATION_IMAGES} images, {VALIDATION_IMAGES} in the validation split" in imported.stdout

    client = Client(stack.url, stack.token, timeout=30)
    response = client.post("/api/v1/training-runs", json={"epochs": 1, "force_promote": True})
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]

    def finished():
        run = client.get(f"/api/v1/training-runs/{run_id}").json()
        return run if run["status"] in ("done", "failed") else None

    try:
        run = wait_for(finished, timeout=RUN_TIMEOUT, interval=1.0, message=f"training run {run_id}")
    except TimeoutError:
        raise AssertionError(f"run did not finish; trainer log:\n{stack.trainer.log()[-4000:]}") from None
    assert run["status"] == "done", f"{run}\n{stack.trainer.log()[-4000:]}"

    models = client.get("/api/v1/models?per_page=1000").json()["models"]
    version = next(m for m in models if m["version"] == run["version"])
    summary = version["training_summary"]
    assert summary["base_images"] == TRAIN_IMAGES and summary["validation_images"] == VALIDATION_IMAGES
    assert summary["steps"] == TINY_BUDGET["training_steps_per_epoch"]
    # the new version and its parent were both scored on the imported validation split
    assert run["metrics"]["validation"]["images"] == VALIDATION_IMAGES

    cached = stack.root / "cache" / "datasets" / "base"
    assert sorted(p.stem for p in (cached / "images").iterdir()) == sorted(s.image_id for s in chosen)
