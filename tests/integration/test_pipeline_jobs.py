"""Job state transitions on SQLite and PostgreSQL: who may claim a job, and how a result is recorded
once however many deliveries there are."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from testkit import servers
from testkit.pipeline import job_row, results_of, seed_job

NUCLEUS = {"label": 1, "area": 10.0, "perimeter": 12.0, "centroid_x": 1.0, "centroid_y": 2.0,
           "equivalent_diameter": 3.5, "eccentricity": 0.2, "solidity": 0.9, "mean_intensity": 5.0,
           "integrated_intensity": 50.0}


def a_result(image_id: str, job_id: str, count: int) -> dict:
    return {"image_id": image_id, "model_version": "test-1", "count": count, "area_mean": 10.0, "area_median": 10.0,
            "area_min": 10.0, "area_max": 10.0, "labels_key": f"results/{job_id}/labels.tif",
            "overlay_key": f"results/{job_id}/overlay.png", "nuclei_csv_key": f"results/{job_id}/nuclei.csv",
            "seconds_model": 0.1, "seconds_total": 0.2}


@pytest.fixture(scope="module")
def private_postgres():
    url = servers.create_database(servers.MACHINE_PG, prefix="nucleus_jobs")
    yield url
    from testkit.env import clear_shared_caches

    clear_shared_caches()
    servers.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, use_settings, tmp_path):
    from shared.infra.db.migrate import upgrade

    url = request.getfixturevalue("private_postgres") if request.param == "postgresql" else None
    use_settings(tmp_path, database_url=url, job_lease_seconds=60)
    upgrade()
    return request.param


def test_claim_complete_and_second_delivery(database):
    from shared.infra import jobs

    image_id, job_id = seed_job(b"bytes", enqueue=False)
    claimed = jobs.claim(job_id, "w1@h", lease_seconds=60)
    assert claimed is not None and claimed.image_id == image_id and claimed.attempts == 1
    assert jobs.claim(job_id, "w2@h", lease_seconds=60) is None  # leased to a live worker
    assert jobs.claim(job_id, "w2@h", lease_seconds=60, takeover=True) is not None  # its own retry
    assert jobs.claim(job_id, "w2@h", lease_seconds=60) is not None  # same name: a restarted worker
    assert jobs.complete(job_id, a_result(image_id, job_id, 2), [NUCLEUS, {**NUCLEUS, "label": 2}])
    assert not jobs.complete(job_id, a_result(image_id, job_id, 2), [NUCLEUS, {**NUCLEUS, "label": 2}])
    assert jobs.claim(job_id, "w3@h", lease_seconds=60) is None  # done is final
    assert not jobs.fail(job_id, "late failure")
    job = job_row(job_id)
    assert job.status.value == "done" and job.attempts == 3 and job.lease_until is None
    assert results_of(job_id) == [{**results_of(job_id)[0], "count": 2, "nuclei": 2}]


def test_failed_is_final_and_release_requeues(database):
    from shared.infra import jobs

    _, job_id = seed_job(b"bytes", enqueue=False)
    assert jobs.claim(job_id, "w1@h", lease_seconds=60)
    assert jobs.release(job_id, "object store unreachable", retry_in_seconds=1, lease_seconds=60)
    job = job_row(job_id)
    assert job.status.value == "queued" and "retrying" in job.error
    assert jobs.claim(job_id, "w2@h", lease_seconds=60) is not None  # a queued job is anyone's
    assert jobs.fail(job_id, "corrupt_image: truncated")
    assert jobs.claim(job_id, "w2@h", lease_seconds=60, takeover=True) is None
    assert job_row(job_id).error == "corrupt_image: truncated"


def test_stale_jobs_are_requeued_once(database):
    from shared.infra import jobs
    from shared.infra.db.tables import Job, utcnow
    from shared.infra.db.session import session_scope

    _, fresh = seed_job(b"fresh", enqueue=False)
    _, never_sent = seed_job(b"never-sent", enqueue=False)
    _, dead_worker = seed_job(b"dead-worker", enqueue=False)
    jobs.claim(dead_worker, "w1@h", lease_seconds=60)
    hour_ago = utcnow() - timedelta(hours=1)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == never_sent).values(created=hour_ago))
        session.execute(update(Job).where(Job.id == dead_worker).values(lease_until=hour_ago))
    with session_scope() as session:
        stale = set(jobs.list_stale(session, lease_seconds=60))
    assert {never_sent, dead_worker} <= stale and fresh not in stale
    assert jobs.requeue_stale(dead_worker, lease_seconds=60)
    assert not jobs.requeue_stale(dead_worker, lease_seconds=60)  # now leased again
    job = job_row(dead_worker)
    assert job.status.value == "queued" and job.enqueued == 1
    assert jobs.claim(dead_worker, "w2@h", lease_seconds=60) is not None



def test_an_image_that_keeps_killing_its_worker_fails_after_three_interruptions(database):
    from shared.infra import jobs
    from shared.infra.db.tables import Job, utcnow
    from shared.infra.db.session import session_scope

    _, hung = seed_job(b"hangs-its-worker", enqueue=False)
    _, orphaned = seed_job(b"kills-its-worker", enqueue=False)
    for attempt in range(1, jobs.MAX_INTERRUPTIONS + 1):
        assert jobs.claim(hung, f"w{attempt}@h", lease_seconds=60) is not None
        with session_scope() as session:  # the worker died or hung: its lease runs out
            session.execute(update(Job).where(Job.id == hung).values(lease_until=utcnow() - timedelta(seconds=1)))
        resent = jobs.requeue_stale(hung, lease_seconds=60)
        assert resent == (attempt < jobs.MAX_INTERRUPTIONS)
        # the same image dies with a worker that restarts under its own name
        assert jobs.claim(orphaned, "w@h", lease_seconds=60) is not None
        assert jobs.requeue_orphans("w@h", lease_seconds=60) == ([orphaned] if attempt < jobs.MAX_INTERRUPTIONS else [])
    for job_id in (hung, orphaned):
        job = job_row(job_id)
        assert job.status.value == "failed" and job.interruptions == jobs.MAX_INTERRUPTIONS
        assert "interrupted" in job.error
        assert jobs.claim(job_id, "w9@h", lease_seconds=60) is None  # failed is final

def test_queue_depth_counts_waiting_messages(use_settings, tmp_path):
    from shared.infra.queue import enqueue_segment, queue_depth

    use_settings(tmp_path)
    assert queue_depth("segment") == 0
    enqueue_segment("a")
    enqueue_segment("b")
    assert queue_depth("segment") == 2
