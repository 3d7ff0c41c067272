"""Real servers for the tests: the machine's PostgreSQL and Redis, private throwaway ones on free
ports (to kill and restart in fault tests), and moto's standalone S3 server."""
from __future__ import annotations

import fcntl
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from testkit.net import free_port, port_open
from testkit.wait import wait_for

REPO = Path(__file__).resolve().parents[1]
ENSURE_SERVICES = REPO / "scripts" / "ensure-services"
MACHINE_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
MACHINE_REDIS = "redis://127.0.0.1:6379"


class ServiceDown(RuntimeError):
    pass


def ensure_machine_service(name: str, port: int) -> None:
    """Start (or install and start) the machine's server when it does not answer; never skip."""
    if port_open(port):
        return
    result = subprocess.run([str(ENSURE_SERVICES), name], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not port_open(port):
        raise ServiceDown(f"{name} on 127.0.0.1:{port} is down and {ENSURE_SERVICES.name} could not start it:\n"
                          f"{result.stdout}{result.stderr}")


# --- PostgreSQL -------------------------------------------------------------------------------

def _pg_admin(server_url: str):
    import sqlalchemy

    return sqlalchemy.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)


def create_database(server_url: str, prefix: str = "nucleus_test") -> str:
    """Create an empty database on `server_url` (no database part) and return its URL."""
    import sqlalchemy

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _pg_admin(server_url).connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    return f"{server_url}/{name}"


def drop_database(url: str) -> None:
    import sqlalchemy

    server_url, name = url.rsplit("/", 1)
    with _pg_admin(server_url).connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- Redis database index ----------------------------------------------------------------------

class RedisDatabaseLease:
    """One of the machine Redis's numbered databases (1-15), held by a file lock so that test runs
    of several engineers on the same machine never share (or flush) each other's database."""

    def __init__(self, server_url: str = MACHINE_REDIS, indices=range(1, 16)):
        self._lock_file = None
        for index in indices:
            lock = open(os.path.join(tempfile.gettempdir(), f"nucleus-test-redis-db-{index}.lock"), "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._lock_file, self.index = lock, index
            self.url = f"{server_url}/{index}"
            break
        else:
            raise ServiceDown("all Redis database indices 1-15 are leased by other test runs")
        self.flush()

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushdb()
        finally:
            client.close()

    def release(self) -> None:
        if self._lock_file is not None:
            self.flush()
            self._lock_file.close()
            self._lock_file = None


# --- Private servers for fault tests -----------------------------------------------------------

def _postgres_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise ServiceDown(f"{tool} not found under /usr/lib/postgresql/*/bin (run scripts/ensure-services postgres)")
    return found[-1]


def _postgres_user() -> dict:
    # initdb and postgres refuse to run as root: run them as the postgres user (as `runuser -u postgres` would).
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


class ThrowawayRedis:
    """`redis-server --port P --save ''` in the foreground; stop/kill and start it again on the same port."""

    def __init__(self):
        if not shutil.which("redis-server"):
            raise ServiceDown("redis-server not installed (run scripts/ensure-services redis)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        if self.running:
            return
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), timeout=15, message=f"throwaway redis on port {self.port}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.running:
            self.process.send_signal(sig)
            self.process.wait(15)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


class ThrowawayPostgres:
    """A private PostgreSQL cluster (initdb) on a free port, trust auth, user postgres. The postmaster
    runs in the foreground as our child, so stop()/kill() act on it directly and it gets reaped."""

    def __init__(self):
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user must be able to reach the folder.
        self.root = Path(tempfile.mkdtemp(prefix="nucleus-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run([_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                        "-E", "UTF8"], check=True, capture_output=True, timeout=120, cwd=self.root, **_postgres_user())
        self.server_url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}"
        self.url = f"{self.server_url}/postgres"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 60) -> None:
        if self.running:
            return
        deadline = time.monotonic() + timeout
        while True:
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen(
                [_postgres_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, **_postgres_user())
            log.close()
            try:
                wait_for(self._accepting, timeout=max(1.0, deadline - time.monotonic()), interval=0.2,
                         message=f"throwaway postgres on port {self.port} (log {self.log_path})")
                return
            except RuntimeError:
                # After a kill, backends of the old postmaster may hold its shared memory for a moment.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _accepting(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {self.process.returncode}; see {self.log_path}")
        result = subprocess.run([_postgres_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)])
        return result.returncode == 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are disconnected, data is kept."""
        if self.running:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; start() recovers."""
        if self.running:
            self.process.kill()
            self.process.wait(15)
            wait_for(lambda: not port_open(self.port), timeout=15, message="killed postgres to close its port")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, prefix: str = "nucleus_test") -> str:
        return create_database(self.server_url, prefix)

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class MotoServer:
    """moto's standalone S3-protocol server on a free loopback port. Objects live in its memory:
    pause()/resume() (SIGSTOP/SIGCONT) simulate an outage without losing them."""

    def __init__(self):
        executable = Path(sys.executable).parent / "moto_server"
        if not executable.exists():
            raise ServiceDown(f"{executable} missing: install the test extras (pip install -e '.[test]')")
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
        self.process = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._answers, timeout=60, interval=0.3, message=f"moto server on {self.endpoint} (log {self.log.name})")

    def _answers(self) -> bool:
        import urllib.request

        if self.process.poll() is not None:
            raise ServiceDown(f"moto server exited with {self.process.returncode}; see {self.log.name}")
        with urllib.request.urlopen(f"http://{self.endpoint}/", timeout=2) as response:
            return response.status == 200

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        os.unlink(self.log.name)

    def make_bucket(self, name: str | None = None) -> str:
        from minio import Minio

        name = name or f"nucleus-test-{uuid.uuid4().hex[:12]}"
        Minio(self.endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False).make_bucket(name)
        return name


S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing-secret"
