"""The worker on the embedded settings: SQLite + local object folder + file-system broker, with a real
Celery worker process. Also: a job whose message was lost is found and finished via the sweeper."""
from __future__ import annotations

import pytest

from testkit.env import service_env
from testkit.pipeline import CeleryWorker, dsb_bytes, results_of, seed_job, wait_job, weights_overrides

SETTINGS = {"job_lease_seconds": 30, **weights_overrides()}


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    from shared.infra.db.migrate import upgrade

    data_dir = tmp_path_factory.mktemp("embedded-pipeline")
    upgrade(f"sqlite:///{data_dir / 'nucleus.db'}")
    return data_dir


@pytest.fixture(scope="module")
def worker(embedded_dir):
    worker = CeleryWorker(service_env(embedded_dir, **SETTINGS), embedded_dir / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture
def embedded(use_settings, embedded_dir):
    return use_settings(embedded_dir, **SETTINGS)


def test_worker_segments_a_real_image(embedded, worker, dsb_samples):
    from shared.infra.storage import get_store

    sample = dsb_samples[0]
    image_id, job_id = seed_job(dsb_bytes(sample), filename=sample.path.name)
    job = wait_job(job_id)
    assert job.status.value == "done", job.error
    [result] = results_of(job_id)
    assert result["nuclei"] == result["count"]
    assert abs(result["count"] - sample.count) <= max(4, 0.35 * sample.count), (result["count"], sample.count)
    assert result["model_version"].startswith("nucleus-")
    store = get_store()
    for key in ("labels_key", "overlay_key", "nuclei_csv_key"):
        assert result[key].startswith(f"results/{job_id}/") and store.exists(result[key])
    csv_lines = store.get(result["nuclei_csv_key"]).decode().strip().splitlines()
    assert len(csv_lines) == result["count"] + 1 and csv_lines[0].startswith("image_id,filename,condition,well,label")
    assert f'"job_id": "{job_id}"' in worker.log()  # the worker's log lines about the job carry its id


def test_lost_message_is_recovered_by_the_sweeper(embedded, worker, dsb_samples):
    from datetime import timedelta

    from sqlalchemy import update

    from shared.infra.db.tables import Job, utcnow
    from shared.infra.db.session import session_scope
    from services.sweeper import sweep_once

    # a job whose message never reached the broker, created longer than a lease ago
    _, job_id = seed_job(dsb_bytes(dsb_samples[1]), enqueue=False)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(created=utcnow() - timedelta(hours=1)))
    assert job_id in sweep_once()
    assert job_id not in sweep_once()  # re-leased: not sent twice
    job = wait_job(job_id)
    assert job.status.value == "done" and job.enqueued == 1
    assert len(results_of(job_id)) == 1


def test_worker_restarted_under_its_name_resumes_its_killed_job(embedded, embedded_dir, worker, dsb_samples):
    # the file-system broker loses the message of a killed worker; with the default 5-minute lease
    # only the restarted worker itself can pick the job up within seconds
    from testkit.pipeline import job_row, tiled_png
    from testkit.wait import wait_for

    _, job_id = seed_job(tiled_png(dsb_samples[3], 6), filename="large.png")
    wait_for(lambda: job_row(job_id).status.value == "running", timeout=120, interval=0.05, message="job running")
    worker.kill()
    assert job_row(job_id).status.value == "running"
    restarted = CeleryWorker(service_env(embedded_dir, **{**SETTINGS, "job_lease_seconds": 300}),
                             embedded_dir / "worker-restarted.log", name=worker.name).start()
    try:
        job = wait_job(job_id, timeout=120)
        assert job.status.value == "done" and job.attempts == 2 and job.enqueued == 2
        assert len(results_of(job_id)) == 1
    finally:
        restarted.stop()
