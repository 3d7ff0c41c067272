"""For the model-line and gate tests: projects with images and labels put straight into the database and
object store (as the API would), training runs executed in this process by the trainer's own code, and
jobs run by the worker's pipeline in this process. Uses the current process's settings (use_settings)."""
from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import numpy as np

# A run of two steps on 96-pixel crops: seconds on 2 cores.
TINY_TRAINING = dict(training_steps_per_epoch=2, training_crop=96, training_batch=2)


def no_base_set(tmp_path: Path) -> dict:
    """Settings under which the trainer finds no base set (no folder, nothing imported)."""
    return {"training_base_dir": str(tmp_path / "no-base-set")}


def small_base_set(root: Path, train: int = 4, validation: int = 2) -> Path:
    """Links to real DSB images: `train` base images and `validation` from the fixed split (256x256
    fluorescence), none of them among testkit.data.pick's first images."""
    from testkit import data

    held = data.validation_ids()
    fluorescence = [s for s in data.load_index() if s.kind == "fluorescence" and s.width == 256 and s.height == 256]
    chosen = ([s for s in fluorescence if s.image_id not in held][:train]
              + sorted((s for s in fluorescence if s.image_id in held), key=lambda s: s.image_id)[-validation:])
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for sample in chosen:
        (root / "images" / sample.path.name).symlink_to(sample.path)
        (root / "labels" / sample.labels_path.name).symlink_to(sample.labels_path)
    return root


def experiment_in(project: str, name: str | None = None) -> int:
    from shared.infra.auth import get_or_create_project
    from shared.infra.db.tables import Experiment
    from shared.infra.db.session import write_scope

    with write_scope() as session:
        experiment = Experiment(name=name or f"exp-{uuid.uuid4().hex[:8]}",
                                project_id=get_or_create_project(session, project).id)
        session.add(experiment)
        session.flush()
        return experiment.id


def add_image(experiment_id: int, data: bytes, filename: str = "image.png") -> tuple[str, str]:
    """An image and its queued job, as an upload leaves them; returns (image_id, job_id)."""
    from shared.infra.db.tables import Image, Job
    from shared.infra.db.session import write_scope
    from shared.infra.storage import get_store

    sha = hashlib.sha256(data).hexdigest()
    key = f"uploads/{sha}"
    get_store().put(key, data)
    with write_scope() as session:
        image = Image(experiment_id=experiment_id, sha256=sha, object_key=key, filename=filename, width=256,
                      height=256, size_bytes=len(data), extra={})
        session.add(image)
        session.flush()
        job = Job(image_id=image.id)
        session.add(job)
        session.flush()
        return image.id, job.id


def add_label(image_id: str, labels: np.ndarray) -> None:
    from PIL import Image as PILImage

    from shared.infra.db.tables import Label
    from shared.infra.db.session import write_scope
    from shared.infra.storage import get_store

    buffer = io.BytesIO()
    PILImage.fromarray(labels.astype(np.uint16)).save(buffer, format="PNG")
    raw = buffer.getvalue()
    sha = hashlib.sha256(raw).hexdigest()
    key = f"labels/{image_id}/{sha}.png"
    get_store().put(key, raw)
    with write_scope() as session:
        session.add(Label(image_id=image_id, object_key=key, sha256=sha, count=len(np.unique(labels)) - 1))


def true_labels(sample) -> np.ndarray:
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(sample.labels_path))


def scrambled_labels(height: int, width: int, seed: int) -> np.ndarray:
    """Random discs where no nucleus need be: labels that teach the model nothing true."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint16)
    yy, xx = np.mgrid[:height, :width]
    for i in range(1, 61):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(5, 20)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return labels


def run_training(project: str | None = None, epochs: int = 1, force_promote: bool = False) -> dict:
    """Record a run as the API does and execute it with the trainer's code; returns the finished row's fields."""
    from shared.infra.auth import get_or_create_project
    from shared.infra.settings import get_settings
    from shared.infra.db.tables import TrainingRun
    from shared.infra.db.session import session_scope
    from shared.infra.db.session import write_scope
    from shared.infra.storage import get_store
    from services.trainer.runs import execute

    with write_scope() as session:
        project_id = get_or_create_project(session, project).id if project else None
        run = TrainingRun(epochs=epochs, force_promote=force_promote, project_id=project_id)
        session.add(run)
        session.flush()
        run_id = run.id
    execute(run_id, get_settings(), get_store())
    with session_scope() as session:
        run = session.get(TrainingRun, run_id)
        return {"id": run.id, "status": run.status.value, "version": run.version, "promoted": run.promoted,
                "metrics": run.metrics, "project_id": run.project_id, "error": run.error}


def segment(job_id: str) -> dict:
    """Run the job with the worker's pipeline; returns its result row's fields."""
    from shared.infra.db.tables import Result
    from shared.infra.db.session import session_scope
    from services.worker.pipeline import process

    assert process(job_id, worker="test-worker").status == "done"
    with session_scope() as session:
        result = session.query(Result).filter(Result.job_id == job_id).one()
        return {"model_version": result.model_version, "count": result.count, "image_id": result.image_id}


def active_in(project: str) -> str | None:
    from shared.infra import registry
    from shared.infra.db.session import session_scope

    with session_scope() as session:
        row = registry.active_version(session, project)
        return row.version if row else None


def shipped_version() -> str:
    """The version of the shipped weights: every project's version before any run or activation."""
    from shared.infra import registry

    return registry.shipped()[0]
