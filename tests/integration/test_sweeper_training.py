"""A queued training run whose message the broker lost is sent again by the sweeper, once per lease."""
from __future__ import annotations

from datetime import timedelta


def test_lost_training_run_message_is_resent_once_per_lease(use_settings, tmp_path):
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.tables import JobStatus, TrainingRun, utcnow
    from shared.infra.db.session import session_scope
    from shared.infra.queue import queue_depth
    from services.sweeper import sweep_training_runs

    use_settings(tmp_path, job_lease_seconds=60)
    upgrade()
    with session_scope() as session:
        lost = TrainingRun(epochs=1, created=utcnow() - timedelta(seconds=120))  # its message never arrived
        fresh = TrainingRun(epochs=1)  # just queued: its message is presumably on its way
        running = TrainingRun(epochs=1, status=JobStatus.running, created=utcnow() - timedelta(seconds=600))
        session.add_all([lost, fresh, running])
        session.flush()
        lost_id = lost.id
    before = queue_depth("train") or 0
    assert sweep_training_runs() == [lost_id]
    assert (queue_depth("train") or 0) == before + 1
    assert sweep_training_runs() == []  # the new lease holds: no flood of copies
    with session_scope() as session:
        assert session.get(TrainingRun, lost_id).lease_until is not None
