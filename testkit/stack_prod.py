"""A production-like stack on loopback, for fault tests and `bench/load.py --stack prod`.

The API under gunicorn, N Celery segment workers and the sweeper run as subprocesses with the
production settings (NUCLEUS_DATABASE_URL / BROKER_URL / S3_*), against private servers this stack
starts and may kill: a throwaway Redis, a throwaway PostgreSQL cluster and moto's S3 server. The
services reach S3 through a TCP proxy, so a test can cut the object store without moto losing its
objects. The commands are `nucleus up`'s own (`child_commands`), so what runs is what ships.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import requests

from testkit import servers
from testkit.env import service_env
from testkit.net import free_port
from testkit.proxy import TcpProxy
from testkit.wait import wait_for


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    memory_limit: int | None = None
    process: subprocess.Popen | None = None
    starts: int = 0
    log_offset: int = 0  # where this start's lines begin in the log

    def start(self, env: dict, cwd: Path) -> None:
        limit = self.memory_limit

        def limit_memory():  # a worker with a memory cap, as a container limit would give it
            if limit:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        log = open(self.log_path, "ab")
        self.log_offset = log.tell()
        self.process = subprocess.Popen(self.argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=limit_memory)
        log.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(15)

    def stop(self, timeout: float = 20) -> None:
        if not self.alive:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self, since_start: bool = False) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_offset if since_start else 0)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def ready(self) -> bool:
        """A Celery worker's current process has logged "<name>@<host> ready."."""
        return self.alive and " ready." in self.log(since_start=True)


@dataclass
class ProdStack:
    root: Path
    workers: int = 2
    lease_seconds: int = 20
    sweep_interval: float = 1.0
    worker_memory_limit: int | None = None
    settings: dict = field(default_factory=dict)

    def start(self, startup_timeout: float = 240) -> "ProdStack":
        from nucleus.commands.up import child_commands
        from shared.infra.auth import create_token
        from shared.infra.db.migrate import upgrade
        from shared.infra.db.session import write_scope

        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = servers.ThrowawayRedis()
        self.postgres = servers.ThrowawayPostgres()
        self.moto = servers.MotoServer()
        self.s3_proxy = TcpProxy(self.moto.port)
        self.database_url = self.postgres.create_database()
        self.bucket = self.moto.make_bucket()
        upgrade(self.database_url)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_base_port = free_port()
        self.env = service_env(self.root, **self.service_settings(self.s3_proxy.endpoint))
        commands = child_commands(self.port, "127.0.0.1", self.workers)
        self.api = Service("api", commands["api"], self.root / "api.log")
        self.sweeper = Service("sweeper", commands["sweeper"], self.root / "sweeper.log")
        self.worker_services = [Service(f"worker-{i}", commands[f"worker-{i}"], self.root / f"worker-{i}.log",
                                        memory_limit=self.worker_memory_limit) for i in range(1, self.workers + 1)]
        with write_scope(self.database_url) as session:
            self.token = create_token(session, name="stack-admin", role="admin")
        try:
            for service in self.services:
                service.start(self.env, self.root)
            wait_for(self._healthy, timeout=startup_timeout, interval=0.5, message=f"{self.url}/healthz")
            for worker in self.worker_services:
                self.wait_worker_ready(worker, timeout=startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def service_settings(self, s3_endpoint: str) -> dict:
        return {"database_url": self.database_url, "broker_url": self.redis.url, "s3_endpoint": s3_endpoint,
                "s3_access_key": servers.S3_ACCESS_KEY, "s3_secret_key": servers.S3_SECRET_KEY,
                "s3_bucket": self.bucket, "job_lease_seconds": self.lease_seconds,
                "sweep_interval_seconds": self.sweep_interval, "worker_processes": self.workers,
                "worker_metrics_port": self.metrics_base_port, **self.settings}

    @property
    def services(self) -> list[Service]:
        return [self.api, self.sweeper, *self.worker_services]

    def _healthy(self) -> bool:
        if not self.api.alive:
            raise AssertionError(f"gunicorn exited:\n{self.api.log()[-3000:]}")
        return requests.get(f"{self.url}/healthz", timeout=3).status_code == 200

    def wait_worker_ready(self, worker: Service, timeout: float = 180) -> None:
        def ready() -> bool:
            if not worker.alive:
                raise AssertionError(f"{worker.name} exited:\n{worker.log()[-3000:]}")
            return worker.ready

        wait_for(ready, timeout=timeout, interval=0.3, message=f"{worker.name} ready")

    def restart_worker(self, worker: Service, wait: bool = True) -> None:
        """Start a killed worker again under the same name, as `nucleus up` or compose would."""
        worker.start(self.env, self.root)
        if wait:
            self.wait_worker_ready(worker)

    def direct_settings(self):
        """Settings of this stack for the test process, reaching S3 directly (not through the proxy)."""
        from shared.infra.settings import Settings

        return Settings(data_dir=self.root, **self.service_settings(self.moto.endpoint))

    def direct_store(self):
        from shared.infra.storage import make_store

        return make_store(self.direct_settings())

    def audit(self, **kwargs):
        from testkit.audit import audit

        return audit(self.database_url, self.direct_store(), **kwargs)

    def worker_metrics_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.metrics_base_port + index}/metrics"

    def logs_tail(self, lines: int = 30) -> str:
        return "\n".join(f"--- {s.name}\n" + "\n".join(s.log().splitlines()[-lines:]) for s in self.services)

    def stop(self) -> None:
        for service in getattr(self, "worker_services", []) + [getattr(self, n, None) for n in ("sweeper", "api")]:
            if service is not None:
                service.stop()
        if getattr(self, "s3_proxy", None) is not None:
            self.s3_proxy.close()
        from shared.infra.db.session import get_engine

        get_engine.cache_clear()  # engines of this process hold connections to the throwaway server
        for name, action in (("moto", "stop"), ("postgres", "destroy"), ("redis", "stop")):
            server = getattr(self, name, None)
            if server is not None:
                getattr(server, action)()

    def __enter__(self) -> "ProdStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
