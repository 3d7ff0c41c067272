"""Fixtures for every test: real PostgreSQL, Redis and S3 (moto) on loopback, the embedded stack
(`nucleus up`), real DSB2018 images (the subset in tests/data). Nothing is mocked; a missing server is started,
never skipped."""
from __future__ import annotations

import os
import shutil

import pytest

from testkit import data, servers
from testkit.browser import missing_browser, start_chromium
from testkit.env import apply_settings, clear_shared_caches, service_env  # noqa: F401 - re-exported for tests
from testkit.http import Client
from testkit.proxy import TcpProxy
from testkit.stack import EmbeddedStack

# Whatever finds data through default_data_root() (trainers' base sets, the CLI, bench scripts run by tests), in
# this process and in the services it starts, sees the committed subset, never the full sets beside the checkout.
os.environ["NUCLEUS_DATA_ROOT"] = str(data.DATA_ROOT)


def _require(name: str, port: int) -> None:
    try:
        servers.ensure_machine_service(name, port)
    except servers.ServiceDown as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def pg_url():
    """A fresh, empty database on the machine's PostgreSQL, dropped after the session."""
    _require("postgres", 5432)
    url = servers.create_database(servers.MACHINE_PG)
    yield url
    clear_shared_caches()  # let go of pooled connections held by cached engines
    servers.drop_database(url)


@pytest.fixture(scope="session")
def redis_url():
    """redis://127.0.0.1:6379/<n>: a database index of the machine's Redis, leased and flushed for the session."""
    _require("redis", 6379)
    lease = servers.RedisDatabaseLease()
    yield lease.url
    lease.release()


@pytest.fixture(scope="session")
def moto():
    """moto's standalone S3 server (a MotoServer: .endpoint, .pause(), .resume(), .make_bucket())."""
    server = servers.MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(moto) -> str:
    """"127.0.0.1:PORT" of the session's moto server."""
    return moto.endpoint


@pytest.fixture
def s3_bucket_env(moto) -> dict[str, str]:
    """NUCLEUS_S3_* variables for a fresh, created bucket on the session's moto server."""
    return {
        "NUCLEUS_S3_ENDPOINT": moto.endpoint,
        "NUCLEUS_S3_ACCESS_KEY": servers.S3_ACCESS_KEY,
        "NUCLEUS_S3_SECRET_KEY": servers.S3_SECRET_KEY,
        "NUCLEUS_S3_BUCKET": moto.make_bucket(),
        "NUCLEUS_S3_SECURE": "false",
        "NUCLEUS_S3_REGION": "us-east-1",
    }


@pytest.fixture
def use_settings(monkeypatch):
    """Configure this process for one test: use_settings(data_dir, **overrides) -> Settings.
    Overrides are setting names or NUCLEUS_* names (s3_bucket_env can be passed as **kwargs)."""
    yield lambda data_dir=None, **overrides: apply_settings(monkeypatch, data_dir, **overrides)
    monkeypatch.undo()
    clear_shared_caches()


@pytest.fixture
def throwaway_redis():
    """Factory: throwaway_redis() -> ThrowawayRedis (.url, .stop(), .kill(), .start(), .restart())."""
    started: list[servers.ThrowawayRedis] = []

    def start() -> servers.ThrowawayRedis:
        started.append(servers.ThrowawayRedis())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def throwaway_postgres():
    """Factory: throwaway_postgres() -> ThrowawayPostgres (.url, .server_url, .create_database(),
    .stop(), .kill(), .start(), .restart())."""
    started: list[servers.ThrowawayPostgres] = []

    def start() -> servers.ThrowawayPostgres:
        started.append(servers.ThrowawayPostgres())
        return started[-1]

    yield start
    for server in started:
        server.destroy()


@pytest.fixture
def throwaway_moto():
    """Factory: a private moto server per call (to pause or stop without disturbing other tests)."""
    started: list[servers.MotoServer] = []

    def start() -> servers.MotoServer:
        started.append(servers.MotoServer())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tcp_proxy():
    """Factory: tcp_proxy(target_port) -> TcpProxy (.port, .endpoint, .cut(), .restore()) on loopback."""
    started: list[TcpProxy] = []

    def start(target_port: int) -> TcpProxy:
        started.append(TcpProxy(target_port))
        return started[-1]

    yield start
    for proxy in started:
        proxy.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless chromium (Selenium driver) for the module, with a fresh profile."""
    missing = missing_browser()
    if missing is not None:
        pytest.fail(f"{missing} is missing: scripts/test installs Debian's chromium and chromium-driver", pytrace=False)
    profile = tmp_path_factory.mktemp("chromium-profile")
    driver = start_chromium(profile)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory):
    """`nucleus up` on a free port and a fresh data directory, healthy, with an admin token:
    .url, .token, .data_dir, .log_path (and .create_token(), .stop())."""
    stack = EmbeddedStack(tmp_path_factory.mktemp("embedded"))
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def stack_client(embedded_stack) -> Client:
    """An admin Client for the module's embedded stack."""
    return Client(embedded_stack.url, embedded_stack.token)


@pytest.fixture(scope="session")
def dsb_samples() -> list[data.Sample]:
    """Four 256x256 fluorescence images from the validation split (never trained on), with their
    true counts: .path, .labels_path, .count, .width, .height, .kind, .image_id."""
    return data.pick("fluorescence", 256, 256, n=4)


@pytest.fixture(scope="module")
def harness(tmp_path_factory, request):
    """The API app on the embedded default (SQLite migrated by Alembic, the local object store, the
    file-system broker), one per test module, driven through Flask's test client."""
    from testkit.api import ApiHarness

    monkeypatch = pytest.MonkeyPatch()
    settings = apply_settings(monkeypatch, tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield ApiHarness(settings)
    monkeypatch.undo()
    clear_shared_caches()


@pytest.fixture(scope="module")
def admin(harness):
    """A test client carrying an admin token."""
    return harness.client("admin")


@pytest.fixture
def experiment(admin, request):
    """A fresh experiment named after the test."""
    name = f"{request.module.__name__.rsplit('.', 1)[-1]}-{request.node.name}"[:180].replace("/", "_")
    assert admin.post("/api/v1/experiments", json={"name": name}).status_code == 201
    return name
