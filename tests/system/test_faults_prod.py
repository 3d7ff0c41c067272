"""Faults on the production-like stack (gunicorn API + 2 Celery workers + sweeper on a throwaway Redis,
a throwaway PostgreSQL and moto behind a TCP proxy). Each test uploads a batch of distinct real-image
crops, injects its fault mid-run, waits for every job to finish and ends with the audit.

Size: NUCLEUS_FAULT_IMAGES images per test (default 20; the closing-note figures use 200).
"""
from __future__ import annotations

import hashlib
import os
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from testkit.crops import crops, png_bytes
from testkit.http import Client
from testkit.pipeline import weights_overrides
from testkit.stack_prod import ProdStack
from testkit.wait import wait_for

N_IMAGES = int(os.environ.get("NUCLEUS_FAULT_IMAGES", "20"))
LEASE_SECONDS = 15
# Workers get an address-space cap, as a container memory limit would give them. The stack is told its
# workers may use far more and may take any image whole: a deployment whose settings promise more memory than
# its containers grant. The poison image below then passes the upload's checks (under the 250 MP limit and
# the declared worker budget) but its model step cannot get the memory it needs.
WORKER_MEMORY_LIMIT = 4 << 30
MISCONFIGURED_WORKERS = {"worker_memory_bytes": 64 << 30, "whole_image_max_pixels": 300_000_000}
POISON_SIDE = 15000  # 225 MP: decodes at upload; the float32 RGB copy alone is 2.7 GB
FINISH_TIMEOUT = 120 + 3 * N_IMAGES


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = ProdStack(tmp_path_factory.mktemp("prod-stack"), workers=2, lease_seconds=LEASE_SECONDS,
                      worker_memory_limit=WORKER_MEMORY_LIMIT,
                      settings={**weights_overrides(), **MISCONFIGURED_WORKERS})
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def client(stack) -> Client:
    return Client(stack.url, stack.token, timeout=30)


@pytest.fixture
def experiment(client) -> str:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    assert client.create_experiment(name).status_code == 201
    return name


class Uploader:
    """Uploads like a well-behaved client: a 503 or 429 is retried after its Retry-After (capped at 1 s
    for a 503, to keep the test short) until a deadline. Records what was accepted and every status seen."""

    def __init__(self, client: Client, experiment: str, deadline_s: float = 180):
        self.client, self.experiment, self.deadline_s = client, experiment, deadline_s
        self.accepted: dict[str, dict] = {}  # sha256 -> row
        self.statuses: list[int] = []
        self.retry_after_missing = 0
        self._lock = threading.Lock()

    def send(self, item: tuple[str, bytes]) -> dict:
        name, data = item
        deadline = time.monotonic() + self.deadline_s
        while True:
            try:
                response = self.client.upload(self.experiment, [(name, data)])
                status = response.status_code
            except requests.RequestException:
                status, response = 0, None  # the API itself unreachable for a moment
            with self._lock:
                self.statuses.append(status)
            if status in (200, 201, 202):
                row = response.json()["images"][0]
                with self._lock:
                    self.accepted[hashlib.sha256(data).hexdigest()] = row
                return row
            if status not in (0, 429, 503) or time.monotonic() > deadline:
                body = response.text[:500] if response is not None else ""
                raise AssertionError(f"upload of {name} answered {status}: {body}")
            if status in (429, 503):  # rate limited, or a dependency briefly out: both say when to retry
                assert response.json()["error"]["message"]
                if "Retry-After" not in response.headers:
                    with self._lock:
                        self.retry_after_missing += 1
            if response is None:
                time.sleep(0.5)
                continue
            retry_after = float(response.headers.get("Retry-After", 1))
            time.sleep(retry_after if status == 429 else min(1.0, retry_after))

    def send_all(self, items, threads: int = 4) -> list[dict]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(self.send, items))


def job_states(stack: ProdStack, experiment: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from shared.infra.db.tables import Experiment, Image, Job
    from shared.infra.db.session import session_scope

    with session_scope(stack.database_url) as session:
        rows = session.execute(select(Job.status, func.count()).join(Image, Image.id == Job.image_id)
                               .join(Experiment, Experiment.id == Image.experiment_id)
                               .where(Experiment.name == experiment).group_by(Job.status)).all()
    return {status.value: n for status, n in rows}


def wait_finished(stack: ProdStack, experiment: str, expected: int, timeout: float = FINISH_TIMEOUT) -> dict:
    def finished():
        states = job_states(stack, experiment)
        return states if states.get("done", 0) + states.get("failed", 0) >= expected else None

    try:
        return wait_for(finished, timeout=timeout, interval=0.5, message=f"{expected} jobs of {experiment} finished")
    except TimeoutError:
        raise AssertionError(f"jobs: {job_states(stack, experiment)}\n{stack.logs_tail()}") from None


def jobs_of(stack: ProdStack, experiment: str) -> list:
    from sqlalchemy import select

    from shared.infra.db.tables import Experiment, Image, Job
    from shared.infra.db.session import session_scope

    with session_scope(stack.database_url) as session:
        return session.execute(select(Job.id, Job.status, Job.attempts, Job.error, Job.worker, Image.sha256)
                               .join(Image, Image.id == Job.image_id)
                               .join(Experiment, Experiment.id == Image.experiment_id)
                               .where(Experiment.name == experiment)).all()


def running_worker_names(stack: ProdStack) -> set[str]:
    from sqlalchemy import select

    from shared.infra.db.tables import Job, JobStatus
    from shared.infra.db.session import session_scope

    with session_scope(stack.database_url) as session:
        return set(session.scalars(select(Job.worker).where(Job.status == JobStatus.running)))


def finish_and_audit(stack: ProdStack, uploader: Uploader, experiment: str, expect_failed: int = 0):
    states = wait_finished(stack, experiment, len(uploader.accepted))
    assert states.get("failed", 0) == expect_failed, [j for j in jobs_of(stack, experiment) if j.error]
    report = stack.audit(accepted_sha256=set(uploader.accepted)).assert_clean()
    statuses = dict(sorted(Counter(uploader.statuses).items()))
    print(f"\nuploads: {len(uploader.accepted)} accepted; answers seen {statuses}; "
          f"503 without Retry-After {uploader.retry_after_missing}")
    print(f"audit: {report.summary()}")
    assert uploader.retry_after_missing == 0
    return report


def test_worker_sigkilled_repeatedly_mid_task(stack, client, experiment):
    uploader = Uploader(client, experiment)
    images = crops(N_IMAGES, seed=1)
    kills, stop = [], threading.Event()

    def killer():
        rng = random.Random(7)
        while not stop.is_set() and len(kills) < max(3, N_IMAGES // 5):
            busy = running_worker_names(stack)
            victims = [w for w in stack.worker_services if w.ready and any(
                (name or "").startswith(w.argv[w.argv.index("-n") + 1].split("@")[0] + "@") for name in busy)]
            if not victims:
                time.sleep(0.05)
                continue
            victim = rng.choice(victims)
            time.sleep(rng.uniform(0.0, 0.2))  # somewhere in the middle of its task
            victim.kill()  # SIGKILL, as the OOM killer or a node loss would
            kills.append(victim.name)
            stack.restart_worker(victim, wait=False)  # the orchestrator restarts it under the same name
            time.sleep(rng.uniform(0.5, 2.0))

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    uploader.send_all(images)
    wait_for(lambda: not thread.is_alive() or job_states(stack, experiment).get("done", 0) >= N_IMAGES,
             timeout=FINISH_TIMEOUT, interval=0.5, message="kills done")
    stop.set()
    thread.join(30)
    report = finish_and_audit(stack, uploader, experiment)
    attempts = [j.attempts for j in jobs_of(stack, experiment)]
    print(f"kills: {len(kills)}; jobs run more than once: {sum(a > 1 for a in attempts)}")
    assert kills, "the killer never found a worker mid-task"
    assert max(attempts) >= 2  # some job was interrupted and ran again, yet has one result
    assert report.jobs["done"] >= N_IMAGES
    for worker in stack.worker_services:
        if not worker.alive:
            stack.restart_worker(worker)
        stack.wait_worker_ready(worker)


def test_redis_restarted_during_run(stack, client, experiment):
    uploader = Uploader(client, experiment)
    images = crops(N_IMAGES, seed=2)
    half = len(images) // 2
    uploader.send_all(images[:half])
    stack.redis.kill()  # Redis keeps nothing on disk here: every queued message is gone
    time.sleep(1.0)
    stack.redis.start()
    uploader.send_all(images[half:])
    finish_and_audit(stack, uploader, experiment)


def test_postgres_restarted_during_run(stack, client, experiment):
    uploader = Uploader(client, experiment)
    images = crops(N_IMAGES, seed=3)
    half = len(images) // 2
    uploader.send_all(images[:half])
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(uploader.send_all, images[half:], 2)  # uploads go on through the outage
        time.sleep(0.5)
        stack.postgres.kill()  # a crash, not a clean shutdown
        time.sleep(3.0)
        stack.postgres.start()
        later.result(timeout=300)
    finish_and_audit(stack, uploader, experiment)


def test_object_store_cut_during_uploads_then_during_processing(stack, client, experiment):
    from sqlalchemy import func, select

    from shared.infra.db.tables import Image
    from shared.infra.db.session import session_scope

    images = crops(N_IMAGES + 1, seed=4)
    refused_name, refused_data = images.pop()
    stack.s3_proxy.cut()
    try:
        response = client.upload(experiment, [(refused_name, refused_data)])
        assert response.status_code == 503, response.text
        assert response.headers.get("Retry-After"), response.headers
        assert response.json()["error"]["code"] == "storage_unavailable"
    finally:
        stack.s3_proxy.restore()
    sha = hashlib.sha256(refused_data).hexdigest()
    with session_scope(stack.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Image).where(Image.sha256 == sha)) == 0
    assert not stack.direct_store().exists(f"uploads/{sha}")  # nothing half-written

    uploader = Uploader(client, experiment)
    uploader.send_all(images)
    wait_for(lambda: job_states(stack, experiment).get("done", 0) >= 1, timeout=120, message="first job done")
    stack.s3_proxy.cut()  # mid-processing: workers cannot fetch inputs nor write outputs
    time.sleep(4.0)
    stack.s3_proxy.restore()
    finish_and_audit(stack, uploader, experiment)
    logs = "".join(w.log() for w in stack.worker_services)
    assert "transient fault; retrying" in logs


def test_same_upload_twice_concurrently(stack, client, experiment):
    from sqlalchemy import func, select

    from shared.infra.db.tables import Image, Job
    from shared.infra.db.session import session_scope

    uploader = Uploader(client, experiment)
    for name, data in crops(max(3, N_IMAGES // 4), seed=5):
        barrier = threading.Barrier(2)

        def send(_):
            barrier.wait()
            return client.upload(experiment, [(name, data)])

        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(send, range(2)))
        assert all(r.status_code in (200, 201, 202) for r in responses), [r.text for r in responses]
        rows = [r.json()["images"][0] for r in responses]
        assert rows[0]["id"] == rows[1]["id"] and rows[0]["job_id"] == rows[1]["job_id"]
        assert sorted(r["duplicate"] for r in rows) == [False, True]
        sha = hashlib.sha256(data).hexdigest()
        uploader.accepted[sha] = rows[0]
        with session_scope(stack.database_url) as session:
            assert session.scalar(select(func.count()).select_from(Image).where(Image.sha256 == sha)) == 1
            assert session.scalar(select(func.count()).select_from(Job).join(Image, Image.id == Job.image_id)
                                  .where(Image.sha256 == sha)) == 1
    finish_and_audit(stack, uploader, experiment)


def test_poison_image_fails_alone_with_its_reason(stack, client, experiment):
    poison = png_bytes(np.zeros((POISON_SIDE, POISON_SIDE), dtype=np.uint8))
    uploader = Uploader(client, experiment)
    images = crops(N_IMAGES, seed=6)
    images.insert(len(images) // 2, ("poison.png", poison))
    uploader.send_all(images)
    finish_and_audit(stack, uploader, experiment, expect_failed=1)
    [failed] = [j for j in jobs_of(stack, experiment) if j.status.value == "failed"]
    assert failed.sha256 == hashlib.sha256(poison).hexdigest()
    assert "MemoryError" in failed.error or "memory" in failed.error.lower(), failed.error
    assert failed.attempts == 1  # not retried: it would fail the same way
    assert all(w.alive for w in stack.worker_services)
