"""Job state transitions, shared by the worker and the sweeper.

queued ──claim──▶ running ──complete──▶ done
   ▲                 │ └────fail──────▶ failed   (a bad image: final, never retried)
   └──release/requeue┘                           (a transient fault, or a lease that ran out)

Every transition is one conditional UPDATE, so two deliveries of one job cannot both win: a job
already `done` or `failed` is never claimed again, and `complete` writes the result, its nuclei and
the `done` status in one transaction keyed by the job (results.job_id is unique).
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterator

from sqlalchemy import and_, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.infra.db.tables import Image, Job, JobStatus, Nucleus, Result, TrainingRun, utcnow
from shared.infra.db.session import write_scope

log = logging.getLogger(__name__)

OPEN = (JobStatus.queued, JobStatus.running)


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs to process a claimed job, read in the claiming transaction."""
    job_id: str
    image_id: str
    object_key: str
    filename: str
    channel: int | None
    condition: str | None
    well: str | None
    attempts: int


def claim(job_id: str, worker: str, lease_seconds: int, takeover: bool = False,
          url: str | None = None) -> ClaimedJob | None:
    """Mark the job running under `worker` with a fresh lease, or return None when it is not ours to run:
    unknown, already done or failed, or running under another worker whose lease still holds.
    `takeover` (a retry of this very message) and a lease held under our own name (a worker restarted
    under the same name) may take a running job over."""
    now = utcnow()
    may_take_over = [Job.lease_until.is_(None), Job.lease_until < now, Job.worker == worker]
    if takeover:
        may_take_over.append(true())
    runnable = or_(Job.status == JobStatus.queued, and_(Job.status == JobStatus.running, or_(*may_take_over)))
    with write_scope(url) as session:
        claimed = session.execute(
            update(Job).where(Job.id == job_id, runnable)
            .values(status=JobStatus.running, lease_until=now + timedelta(seconds=lease_seconds),
                    attempts=Job.attempts + 1, worker=worker, error=None, started=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not claimed:
            return None
        job, image = session.execute(select(Job, Image).join(Image, Job.image_id == Image.id)
                                     .where(Job.id == job_id)).one()
        return ClaimedJob(job_id=job.id, image_id=image.id, object_key=image.object_key, filename=image.filename,
                          channel=image.channel, condition=image.condition, well=image.well, attempts=job.attempts)


def renew(job_id: str, worker: str, lease_seconds: int, url: str | None = None) -> bool:
    """Extend the lease of a job `worker` is still running; False once the job is no longer its own."""
    with write_scope(url) as session:
        return bool(session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.running, Job.worker == worker)
            .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        ).rowcount)


@contextmanager
def held_lease(job_id: str, worker: str, lease_seconds: int, max_seconds: float,
               url: str | None = None) -> Iterator[None]:
    """Renew the job's lease every third of a lease while the block runs, so that an image slower than
    one lease is not re-sent by the sweeper while its worker is alive. A worker that dies stops renewing,
    and the lease runs out as before; so does one still busy after `max_seconds`, which is taken to hang
    (the sweeper re-sends the job, and a job that hangs MAX_INTERRUPTIONS workers fails)."""
    stop = threading.Event()
    give_up = time.monotonic() + max_seconds

    def keep() -> None:
        while not stop.wait(lease_seconds / 3) and time.monotonic() < give_up:
            try:
                if not renew(job_id, worker, lease_seconds, url):
                    return
            except Exception as exc:  # noqa: BLE001 - a database blip: the next renewal may work
                log.warning("could not renew the job's lease", extra={"error": str(exc)})

    keeper = threading.Thread(target=keep, name=f"lease-{job_id}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join(timeout=lease_seconds)


def complete(job_id: str, result: dict, nuclei: list[dict], url: str | None = None) -> bool:
    """Record the outcome: job `done`, one Result, its Nucleus rows — all or nothing.
    False when the job was already finished (a duplicate delivery); nothing is written then."""
    now = utcnow()
    try:
        with write_scope(url) as session:
            finished = session.execute(
                update(Job).where(Job.id == job_id, Job.status.in_(OPEN))
                .values(status=JobStatus.done, finished=now, lease_until=None, error=None)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not finished:
                return False
            row = Result(job_id=job_id, created=now, **result)
            session.add(row)
            session.flush()
            if nuclei:
                session.execute(insert(Nucleus), [{**n, "result_id": row.id} for n in nuclei])
        return True
    except IntegrityError:
        # the conditional UPDATE above already serialises deliveries; the unique keys on results
        # (job_id, image_id) are the last guard, and they held
        log.info("result already recorded", extra={"job_id": job_id})
        return False


def fail(job_id: str, reason: str, url: str | None = None) -> bool:
    """Final failure with a readable reason (a bad image, a poison input). False if already finished."""
    with write_scope(url) as session:
        return bool(session.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(OPEN))
            .values(status=JobStatus.failed, error=reason[:2000], finished=utcnow(), lease_until=None)
            .execution_options(synchronize_session=False)
        ).rowcount)


def release(job_id: str, reason: str, retry_in_seconds: float, lease_seconds: int, url: str | None = None) -> bool:
    """Give a running job back to the queue after a transient fault; a retry message is on its way.
    The lease covers the wait, so the sweeper only steps in if that message never arrives."""
    until = utcnow() + timedelta(seconds=retry_in_seconds + lease_seconds)
    with write_scope(url) as session:
        return bool(session.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(OPEN))
            .values(status=JobStatus.queued, error=f"retrying: {reason}"[:2000], lease_until=until)
            .execution_options(synchronize_session=False)
        ).rowcount)


def stale_filter(now: datetime, lease_seconds: int):
    """Open jobs whose lease ran out, or that never had one and are older than a lease."""
    return and_(Job.status.in_(OPEN),
                or_(Job.lease_until < now,
                    and_(Job.lease_until.is_(None), Job.created < now - timedelta(seconds=lease_seconds))))


def list_stale(session: Session, now: datetime | None = None, lease_seconds: int = 300, limit: int = 1000) -> list[str]:
    now = now or utcnow()
    return list(session.scalars(select(Job.id).where(stale_filter(now, lease_seconds))
                                .order_by(Job.created).limit(limit)))


# A job still `queued` past its lease has most likely just been waiting behind a deep queue (its message
# is there), not lost: each re-send of a waiting job doubles its next lease, up to this many times, so
# a backlog of hours costs a few duplicate messages per job instead of one per lease period.
MAX_LEASE_DOUBLINGS = 4

# An image whose processing kills or hangs its worker every time (say, the kernel's out-of-memory killer)
# must not stall the queue forever: after this many interrupted attempts the job fails with a reason.
MAX_INTERRUPTIONS = 3
INTERRUPTED_REASON = (f"processing was interrupted {MAX_INTERRUPTIONS} times (the worker died or hung on this "
                      "image; too large for the worker's memory?)")


def requeue_stale(job_id: str, lease_seconds: int, url: str | None = None) -> bool:
    """Put a stale job back to `queued` with a new lease and count the message about to be sent.
    Conditional on it still being stale (and on the count read), so two sweepers do not both re-send it.
    A job that was `running` (its worker died or hung) gets one lease, and fails for good once that has
    happened MAX_INTERRUPTIONS times; one that was waiting in `queued` gets a lease doubled per earlier
    re-send (see MAX_LEASE_DOUBLINGS). Returns whether a message should be sent."""
    now = utcnow()
    with write_scope(url) as session:
        found = session.execute(select(Job.status, Job.enqueued, Job.interruptions)
                                .where(Job.id == job_id, stale_filter(now, lease_seconds))).first()
        if found is None:
            return False
        status, enqueued, interruptions = found
        still_stale = and_(Job.id == job_id, Job.enqueued == enqueued, stale_filter(now, lease_seconds))
        if status == JobStatus.running:
            interruptions = (interruptions or 0) + 1
            if interruptions >= MAX_INTERRUPTIONS:
                session.execute(update(Job).where(still_stale).values(
                    status=JobStatus.failed, interruptions=interruptions, finished=now, lease_until=None,
                    error=INTERRUPTED_REASON).execution_options(synchronize_session=False))
                return False
        lease = lease_seconds
        if status == JobStatus.queued:
            lease *= 2 ** min(enqueued or 0, MAX_LEASE_DOUBLINGS)
        return bool(session.execute(
            update(Job).where(still_stale)
            .values(status=JobStatus.queued, lease_until=now + timedelta(seconds=lease),
                    enqueued=Job.enqueued + 1, interruptions=interruptions)
            .execution_options(synchronize_session=False)
        ).rowcount)


def requeue_orphans(worker: str, lease_seconds: int, url: str | None = None) -> list[str]:
    """Jobs left `running` under this worker's name by an earlier incarnation of it (a worker runs one
    task at a time, so at its start nothing can legitimately be running under its name). They count an
    interruption: back to `queued` with a new lease and a counted message (the caller sends the messages),
    or `failed` once interrupted MAX_INTERRUPTIONS times."""
    now = utcnow()
    with write_scope(url) as session:
        orphaned = and_(Job.status == JobStatus.running, Job.worker == worker)
        session.execute(
            update(Job).where(orphaned, Job.interruptions >= MAX_INTERRUPTIONS - 1)
            .values(status=JobStatus.failed, interruptions=Job.interruptions + 1, finished=now, lease_until=None,
                    error=INTERRUPTED_REASON)
            .execution_options(synchronize_session=False))
        orphans = list(session.scalars(select(Job.id).where(orphaned)))
        if orphans:
            session.execute(
                update(Job).where(Job.id.in_(orphans), orphaned)
                .values(status=JobStatus.queued, lease_until=now + timedelta(seconds=lease_seconds),
                        enqueued=Job.enqueued + 1, interruptions=Job.interruptions + 1)
                .execution_options(synchronize_session=False))
    return orphans


def requeue_stale_training_runs(lease_seconds: int, url: str | None = None) -> list[str]:
    """Give every queued training run past its lease (or never leased and older than one) a new lease;
    return their ids for re-sending."""
    now = utcnow()
    stale = and_(TrainingRun.status == JobStatus.queued,
                 or_(TrainingRun.lease_until < now,
                     and_(TrainingRun.lease_until.is_(None), TrainingRun.created < now - timedelta(seconds=lease_seconds))))
    with write_scope(url) as session:
        run_ids = list(session.scalars(select(TrainingRun.id).where(stale)))
        if run_ids:
            session.execute(update(TrainingRun).where(TrainingRun.id.in_(run_ids))
                            .values(lease_until=now + timedelta(seconds=lease_seconds))
                            .execution_options(synchronize_session=False))
    return run_ids
