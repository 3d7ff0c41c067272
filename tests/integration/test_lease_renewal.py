"""A worker that is alive keeps its job: the lease is renewed while an image is being processed, so
the sweeper does not re-send a slow image; once the worker stops renewing, the lease runs out as before."""
from __future__ import annotations

import time

from testkit.pipeline import job_row, seed_job

LEASE = 2


def test_a_held_lease_outlives_its_length_and_ends_with_the_block(use_settings, tmp_path):
    from shared.infra import jobs
    from shared.infra.db.migrate import upgrade

    upgrade(use_settings(tmp_path, job_lease_seconds=LEASE).resolved_database_url)
    _, job_id = seed_job(b"slow image", enqueue=False)
    assert jobs.claim(job_id, "segment-1@h", LEASE) is not None
    with jobs.held_lease(job_id, "segment-1@h", LEASE, max_seconds=60):
        time.sleep(3 * LEASE)  # three leases' worth of work
        assert not jobs.requeue_stale(job_id, LEASE)
        assert job_row(job_id).status.value == "running"
    time.sleep(LEASE + 0.5)
    assert jobs.requeue_stale(job_id, LEASE)  # no longer renewed: stale, re-sent
    assert job_row(job_id).status.value == "queued"


def test_a_lease_taken_over_by_another_worker_is_not_renewed(use_settings, tmp_path):
    from shared.infra import jobs
    from shared.infra.db.migrate import upgrade

    upgrade(use_settings(tmp_path, job_lease_seconds=LEASE).resolved_database_url)
    _, job_id = seed_job(b"taken over", enqueue=False)
    assert jobs.claim(job_id, "segment-1@h", LEASE) is not None
    assert not jobs.renew(job_id, "segment-2@h", LEASE)
    with jobs.held_lease(job_id, "segment-1@h", LEASE, max_seconds=60):
        assert jobs.claim(job_id, "segment-2@h", LEASE, takeover=True) is not None
        time.sleep(2 * LEASE)
        assert job_row(job_id).worker == "segment-2@h"


def test_a_worker_busy_past_the_longest_job_is_taken_to_hang(use_settings, tmp_path):
    from shared.infra import jobs
    from shared.infra.db.migrate import upgrade

    upgrade(use_settings(tmp_path, job_lease_seconds=LEASE).resolved_database_url)
    _, job_id = seed_job(b"hangs", enqueue=False)
    assert jobs.claim(job_id, "segment-1@h", LEASE) is not None
    with jobs.held_lease(job_id, "segment-1@h", LEASE, max_seconds=LEASE):
        time.sleep(2 * LEASE + 1)
        assert jobs.requeue_stale(job_id, LEASE)  # renewals stopped: the sweeper re-sends it
