"""The fixtures themselves: each real server answers, is private to the session, and behaves as the
fault tests rely on (a restarted Redis forgets, a restarted PostgreSQL remembers)."""
from __future__ import annotations

import os

import pytest
import redis
import sqlalchemy
import urllib3

from testkit.env import service_env
from testkit.wait import wait_for


def test_pg_url_is_a_private_writable_database(pg_url):
    # Session-scoped: other tests may already have migrated it, so this only owns its own table.
    assert pg_url.rsplit("/", 1)[1].startswith("nucleus_test_")
    engine = sqlalchemy.create_engine(pg_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        assert conn.execute(sqlalchemy.text("select current_database()")).scalar() == pg_url.rsplit("/", 1)[1]
        conn.execute(sqlalchemy.text("create table fixture_probe (n int)"))
        conn.execute(sqlalchemy.text("insert into fixture_probe values (42)"))
    with engine.begin() as conn:
        assert conn.execute(sqlalchemy.text("select n from fixture_probe")).scalar() == 42
        conn.execute(sqlalchemy.text("drop table fixture_probe"))


def test_redis_url_is_a_leased_empty_database(redis_url):
    index = int(redis_url.rsplit("/", 1)[1])
    assert 1 <= index <= 15
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.set("probe", "1")
    assert client.get("probe") == b"1"
    client.delete("probe")


def test_s3_bucket_env_round_trips_through_the_store(s3_bucket_env, use_settings, tmp_path):
    from shared.infra.storage import ObjectNotFound, S3Store, get_store

    use_settings(tmp_path, **s3_bucket_env)
    store = get_store()
    assert isinstance(store, S3Store)
    store.put("uploads/abc", b"bytes")
    assert store.get("uploads/abc") == b"bytes"
    assert store.exists("uploads/abc") and store.list("uploads/") == ["uploads/abc"]
    store.delete("uploads/abc")
    with pytest.raises(ObjectNotFound):
        store.get("uploads/abc")


def test_each_s3_bucket_env_gets_its_own_bucket(moto, s3_bucket_env):
    assert moto.make_bucket() != s3_bucket_env["NUCLEUS_S3_BUCKET"]


def test_throwaway_redis_forgets_on_restart_and_refuses_when_stopped(throwaway_redis):
    server = throwaway_redis()
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    client.set("k", "v")
    server.restart()
    assert wait_for(lambda: client.ping(), timeout=10)
    assert client.get("k") is None  # --save '': nothing survives a restart, as in production
    server.kill()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    server.start()
    assert wait_for(lambda: client.ping(), timeout=10)


def test_throwaway_postgres_survives_restart_and_crash(throwaway_postgres):
    server = throwaway_postgres()
    url = server.create_database()
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("create table t (n int)"))
        conn.execute(sqlalchemy.text("insert into t values (7)"))
    server.restart()
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select n from t")).scalar() == 7
    server.kill()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        engine.connect().close()
    server.start()
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select n from t")).scalar() == 7


def test_tcp_proxy_cuts_and_restores_the_path_to_s3(moto, tcp_proxy):
    from minio import Minio

    from testkit.servers import S3_ACCESS_KEY, S3_SECRET_KEY

    bucket = moto.make_bucket()
    proxy = tcp_proxy(moto.port)
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=3), retries=False)
    client = Minio(proxy.endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False, http_client=http)
    assert client.bucket_exists(bucket)
    proxy.cut()
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.bucket_exists(bucket)
    proxy.restore()
    assert client.bucket_exists(bucket)


def test_service_env_drops_inherited_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("NUCLEUS_DATABASE_URL", "postgresql://elsewhere/x")
    env = service_env(tmp_path, broker_url="redis://127.0.0.1:6379/3")
    assert "NUCLEUS_DATABASE_URL" not in env
    assert env["NUCLEUS_BROKER_URL"] == "redis://127.0.0.1:6379/3"
    assert env["NUCLEUS_DATA_DIR"] == str(tmp_path.resolve())
    with pytest.raises(KeyError):
        service_env(tmp_path, no_such_setting=1)


def test_use_settings_reconfigures_this_process(use_settings, tmp_path):
    from shared.infra.settings import get_settings
    from shared.infra.storage import LocalStore, get_store

    settings = use_settings(tmp_path, max_pixels=1234)
    assert get_settings() is settings and settings.max_pixels == 1234
    assert isinstance(get_store(), LocalStore) and get_store().root == settings.objects_folder


def test_wait_for_reports_what_never_happened():
    with pytest.raises(TimeoutError, match="the moon"):
        wait_for(lambda: False, timeout=0.3, interval=0.05, message="the moon")


def test_dsb_samples_are_real_images_with_counts(dsb_samples):
    from shared.domain.imaging.imageio import decode

    assert len(dsb_samples) >= 3
    for sample in dsb_samples:
        image = decode(sample.path.read_bytes())
        assert image.shape[:2] == (sample.height, sample.width)
        assert sample.count > 0 and sample.labels_path.exists()


def test_embedded_stack_serves_with_its_admin_token(embedded_stack, stack_client):
    assert stack_client.get("/healthz").status_code == 200
    assert stack_client.get("/api/v1/experiments").status_code == 200
    assert stack_client.with_token(None).get("/api/v1/experiments").status_code == 401
    assert os.path.isfile(embedded_stack.log_path)
