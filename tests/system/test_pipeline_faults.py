"""Transient faults are retried with backoff: a worker whose object store is unreachable for a few
seconds retries the job and finishes it, with one result."""
from __future__ import annotations

import time

import pytest

from testkit import servers
from testkit.env import service_env
from testkit.proxy import TcpProxy
from testkit.pipeline import (CeleryWorker, dsb_bytes, job_row, results_of, seed_job, wait_job,
                                    weights_overrides)
from testkit.wait import wait_for


@pytest.fixture(scope="module")
def setup(tmp_path_factory, pg_url, redis_url, moto):
    from shared.infra.db.migrate import upgrade

    upgrade(pg_url)
    proxy = TcpProxy(moto.port)
    direct = {"database_url": pg_url, "broker_url": redis_url, "s3_endpoint": moto.endpoint,
              "s3_access_key": servers.S3_ACCESS_KEY, "s3_secret_key": servers.S3_SECRET_KEY,
              "s3_bucket": moto.make_bucket(), "job_lease_seconds": 60, **weights_overrides()}
    data_dir = tmp_path_factory.mktemp("faults")
    worker = CeleryWorker(service_env(data_dir, **{**direct, "s3_endpoint": proxy.endpoint}), data_dir / "worker.log",
                          name="segment-faults").start()
    yield direct, proxy, worker
    worker.stop()
    proxy.cut()


def test_object_store_outage_is_retried_then_succeeds(setup, use_settings, tmp_path, dsb_samples):
    direct, proxy, worker = setup
    use_settings(tmp_path, **direct)  # this process reaches moto directly; the worker only via the proxy
    proxy.cut()
    _, job_id = seed_job(dsb_bytes(dsb_samples[0]))
    wait_for(lambda: "transient fault; retrying" in worker.log(), timeout=60, message="worker retrying")
    assert job_row(job_id).status.value in ("queued", "running")  # waiting for its retry, not failed
    time.sleep(1)
    proxy.restore()
    job = wait_job(job_id, timeout=120)
    assert job.status.value == "done", job.error
    assert job.attempts >= 2 and job.error is None
    assert len(results_of(job_id)) == 1
