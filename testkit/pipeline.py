"""For the pipeline tests: put an image and its job straight into the database and object store (as
the API would), and run real Celery worker processes against a configuration."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from testkit.wait import wait_for

# Other weights than the shipped ones, e.g. while the shipped file is still being trained.
TEST_WEIGHTS = os.environ.get("NUCLEUS_TEST_WEIGHTS")


def weights_overrides() -> dict:
    return {"weights_path": TEST_WEIGHTS} if TEST_WEIGHTS else {}


def seed_job(data: bytes, filename: str = "image.png", channel: int | None = None, enqueue: bool = True,
             condition: str | None = "control", well: str | None = "A01") -> tuple[str, str]:
    """Store `data` under uploads/<sha256>, add experiment/image/job rows; return (image_id, job_id).
    Uses the current process's settings (see the use_settings fixture)."""
    from shared.infra.auth import ensure_default_project
    from shared.infra.db.tables import Experiment, Image, Job
    from shared.infra.db.session import write_scope
    from shared.infra.queue import enqueue_segment
    from shared.infra.storage import get_store

    sha = hashlib.sha256(data).hexdigest()
    key = f"uploads/{sha}"
    get_store().put(key, data)
    with write_scope() as session:
        project = ensure_default_project(session)
        experiment = Experiment(name=f"exp-{uuid.uuid4().hex[:8]}", project_id=project.id)
        session.add(experiment)
        session.flush()
        image = Image(experiment_id=experiment.id, sha256=sha, object_key=key, filename=filename, width=0,
                      height=0, size_bytes=len(data), channel=channel, condition=condition, well=well, extra={})
        session.add(image)
        session.flush()
        job = Job(image_id=image.id, enqueued=1 if enqueue else 0)
        session.add(job)
        session.flush()
        image_id, job_id = image.id, job.id
    if enqueue:
        enqueue_segment(job_id)
    return image_id, job_id


def job_row(job_id: str):
    from shared.infra.db.tables import Job
    from shared.infra.db.session import session_scope

    with session_scope() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def wait_job(job_id: str, timeout: float = 120.0, states=("done", "failed")):
    return wait_for(lambda: (job := job_row(job_id)).status.value in states and job, timeout=timeout, interval=0.2,
                    message=f"job {job_id} reaching {states}")


def results_of(job_id: str) -> list[dict]:
    """Every result row of a job with its nuclei count (the schema allows one; the test checks)."""
    from sqlalchemy import func, select

    from shared.infra.db.tables import Nucleus, Result
    from shared.infra.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(select(Result).where(Result.job_id == job_id)).scalars().all()
        return [{"count": r.count, "model_version": r.model_version, "labels_key": r.labels_key,
                 "overlay_key": r.overlay_key, "nuclei_csv_key": r.nuclei_csv_key, "area_mean": r.area_mean,
                 "nuclei": session.scalar(select(func.count()).select_from(Nucleus).where(Nucleus.result_id == r.id))}
                for r in rows]


class CeleryWorker:
    """`celery -A services.worker.app worker -Q segment --pool solo` as a subprocess with its own log."""

    def __init__(self, env: dict, log_path: Path, name: str = "segment-test"):
        self.env, self.log_path, self.name = env, Path(log_path), name
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "CeleryWorker":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "services.worker.app", "worker", "-Q", "segment", "--pool", "solo",
             "--concurrency", "1", "-n", f"{self.name}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel", "INFO"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_for(self._ready, timeout=timeout, interval=0.3, message=f"worker {self.name} ready")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        return f"{self.name}@" in self.log() and " ready." in self.log()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def dsb_bytes(sample) -> bytes:
    return Path(sample.path).read_bytes()


def tiled_png(sample, times: int) -> bytes:
    """A larger real image: the sample tiled `times` x `times` (a slow enough task to kill mid-way)."""
    import io

    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(sample.path))
    buffer = io.BytesIO()
    Image.fromarray(np.tile(image, (times, times, 1))).save(buffer, format="PNG")
    return buffer.getvalue()
