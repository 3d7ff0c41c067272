"""A deep backlog is not a fault: a job merely waiting in `queued` past its lease is re-sent by the
sweeper (its message might be lost), but each re-send doubles its next lease, so hours of backlog cost a
few duplicate messages per job, not one per lease period. A job whose worker died is re-sent after one
lease, every time. (Found by bench/load.py: 200 images behind one worker with a 20 s lease put 767
messages in the queue.)"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from testkit.pipeline import job_row, seed_job

LEASE = 60


def _expire(job_id: str) -> None:
    from shared.infra.db.tables import Job, utcnow
    from shared.infra.db.session import session_scope

    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_until=utcnow() - timedelta(seconds=1),
                                                                   created=utcnow() - timedelta(hours=1)))


def _lease_left(job_id: str) -> float:
    from shared.infra.db.tables import utcnow

    until = job_row(job_id).lease_until
    if until.tzinfo is None:  # SQLite hands back naive UTC
        until = until.replace(tzinfo=utcnow().tzinfo)
    return (until - utcnow()).total_seconds()


def test_waiting_jobs_back_off_dead_workers_do_not(use_settings, tmp_path):
    from shared.infra import jobs
    from shared.infra.db.migrate import upgrade

    settings = use_settings(tmp_path, job_lease_seconds=LEASE)
    upgrade(settings.resolved_database_url)
    _, waiting = seed_job(b"waiting", enqueue=False)
    leases = []
    for _ in range(6):
        _expire(waiting)
        assert jobs.requeue_stale(waiting, LEASE)
        assert not jobs.requeue_stale(waiting, LEASE)  # re-leased: one message per expiry
        leases.append(_lease_left(waiting))
    assert [round(x / LEASE) for x in leases] == [1, 2, 4, 8, 16, 16]
    assert job_row(waiting).enqueued == 6

    _, crashed = seed_job(b"crashed", enqueue=False)
    for _ in range(jobs.MAX_INTERRUPTIONS - 1):
        assert jobs.claim(crashed, "segment-1@h", LEASE) is not None
        _expire(crashed)
        assert jobs.requeue_stale(crashed, LEASE)
        assert round(_lease_left(crashed) / LEASE) == 1
    assert jobs.claim(crashed, "segment-1@h", LEASE) is not None
    _expire(crashed)
    assert not jobs.requeue_stale(crashed, LEASE)  # interrupted once too often: failed, not re-sent
    assert job_row(crashed).status.value == "failed"
