"""The worker on production parts: a real Celery worker process consuming a real Redis broker, the
database on PostgreSQL, objects in an S3 server (moto) through the minio SDK.

At-least-once delivery with idempotent results: a second delivery writes nothing, a bad image
fails once with its reason, a worker killed mid-task leaves exactly one result after recovery."""
from __future__ import annotations

import time

import pytest

from testkit import servers
from testkit.env import service_env
from testkit.pipeline import (CeleryWorker, dsb_bytes, job_row, results_of, seed_job, tiled_png, wait_job,
                                    weights_overrides)
from testkit.wait import wait_for

LEASE_SECONDS = 20


@pytest.fixture(scope="module")
def production_settings(pg_url, redis_url, moto) -> dict:
    from shared.infra.db.migrate import upgrade

    upgrade(pg_url)
    return {"database_url": pg_url, "broker_url": redis_url, "s3_endpoint": moto.endpoint,
            "s3_access_key": servers.S3_ACCESS_KEY, "s3_secret_key": servers.S3_SECRET_KEY,
            "s3_bucket": moto.make_bucket(), "job_lease_seconds": LEASE_SECONDS, **weights_overrides()}


@pytest.fixture(scope="module")
def worker_factory(tmp_path_factory, production_settings):
    data_dir = tmp_path_factory.mktemp("production-pipeline")
    started: list[CeleryWorker] = []

    def start(name: str = "segment-a") -> CeleryWorker:
        env = service_env(data_dir, **production_settings)
        started.append(CeleryWorker(env, data_dir / f"{name}-{len(started)}.log", name=name).start())
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def worker(worker_factory):
    return worker_factory("segment-a")


@pytest.fixture
def production(use_settings, tmp_path, production_settings):
    return use_settings(tmp_path, **production_settings)


def test_worker_segments_a_real_image(production, worker, dsb_samples):
    from shared.infra.storage import get_store

    sample = dsb_samples[0]
    _, job_id = seed_job(dsb_bytes(sample), filename=sample.path.name)
    job = wait_job(job_id)
    assert job.status.value == "done", job.error
    assert job.attempts == 1 and job.worker.startswith("segment-a@")
    [result] = results_of(job_id)
    assert result["nuclei"] == result["count"]
    assert abs(result["count"] - sample.count) <= max(4, 0.35 * sample.count), (result["count"], sample.count)
    store = get_store()
    for key in ("labels_key", "overlay_key", "nuclei_csv_key"):
        assert store.exists(result[key]), key


def test_second_delivery_writes_nothing(production, worker, dsb_samples):
    from shared.infra.queue import enqueue_segment, queue_depth

    _, job_id = seed_job(dsb_bytes(dsb_samples[1]))
    enqueue_segment(job_id)  # the same job delivered twice
    assert wait_job(job_id).status.value == "done"
    wait_for(lambda: queue_depth("segment") == 0, timeout=60, message="queue drained")
    wait_for(lambda: worker.log().count(f'"job_id": "{job_id}"') >= 2 and "not claimable" in worker.log(),
             timeout=60, message="second delivery handled")
    enqueue_segment(job_id)  # and once more after it is done
    wait_for(lambda: sum(1 for line in worker.log().splitlines()
                         if job_id in line and "not claimable" in line) >= 2, timeout=60, message="third delivery")
    [result] = results_of(job_id)
    assert result["nuclei"] == result["count"]
    assert job_row(job_id).attempts == 1


def test_corrupt_image_fails_once_with_a_reason(production, worker, dsb_samples):
    data = dsb_bytes(dsb_samples[2])
    _, bad_job = seed_job(data[: len(data) // 2], filename="truncated.png")
    job = wait_job(bad_job)
    assert job.status.value == "failed"
    assert "truncated" in (job.error or ""), job.error  # the decoder's reason, readable
    assert job.attempts == 1  # a bad image is not retried
    assert results_of(bad_job) == []
    assert worker.alive()
    _, good_job = seed_job(dsb_bytes(dsb_samples[2]))
    assert wait_job(good_job).status.value == "done"


def test_worker_killed_mid_task_leaves_exactly_one_result(production, worker, worker_factory, dsb_samples):
    from services.sweeper import sweep_once

    _, job_id = seed_job(tiled_png(dsb_samples[3], 6), filename="large.png")  # 1536x1536: seconds of work
    wait_for(lambda: job_row(job_id).status.value == "running", timeout=120, interval=0.05, message="job running")
    time.sleep(0.3)
    worker.kill()
    assert job_row(job_id).status.value == "running" and results_of(job_id) == []
    replacement = worker_factory("segment-b")
    # Redis keeps the dead worker's unacknowledged message for its visibility timeout; the sweeper
    # re-sends the job as soon as its lease has run out
    wait_for(lambda: job_id in sweep_once(), timeout=LEASE_SECONDS + 30, interval=1, message="sweeper re-enqueues")
    job = wait_job(job_id, timeout=180)
    assert job.status.value == "done", job.error
    assert job.attempts == 2 and job.worker.startswith("segment-b@")
    [result] = results_of(job_id)
    assert result["nuclei"] == result["count"]
    assert replacement.alive()
