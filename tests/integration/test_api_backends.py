"""The API on the production backends: PostgreSQL (the machine's server, a fresh database) and an
S3-protocol object store (moto's standalone server, through the minio SDK), over real HTTP."""
from __future__ import annotations

import hashlib
import threading
import uuid

import pytest
import requests
from minio import Minio
from werkzeug.serving import make_server

from shared.infra.db.tables import Image, Job
from testkit.api import ApiHarness, nuclei_image


@pytest.fixture
def production(tmp_path, pg_url, s3_bucket_env, use_settings):
    settings = use_settings(tmp_path, database_url=pg_url, **s3_bucket_env)
    harness = ApiHarness(settings)
    server = make_server("127.0.0.1", 0, harness.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    harness.base_url = f"http://127.0.0.1:{server.server_port}"
    harness.bucket = s3_bucket_env["NUCLEUS_S3_BUCKET"]
    harness.s3 = Minio(s3_bucket_env["NUCLEUS_S3_ENDPOINT"], access_key=s3_bucket_env["NUCLEUS_S3_ACCESS_KEY"],
                       secret_key=s3_bucket_env["NUCLEUS_S3_SECRET_KEY"], secure=False)
    yield harness
    server.shutdown()


def http(harness, token):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def upload(session, base, experiment, files, **fields):
    return session.post(f"{base}/api/v1/experiments/{experiment}/images",
                        files=[("file", (name, data)) for name, data in files], data=fields, timeout=60)


def test_upload_to_postgres_and_s3_and_read_the_result_back(production):
    admin = http(production, production.token("admin"))
    base, name = production.base_url, f"prod-{uuid.uuid4().hex[:8]}"
    assert production.url.startswith("postgresql")
    assert admin.post(f"{base}/api/v1/experiments", json={"name": name}).status_code == 201
    data = nuclei_image(100)
    response = upload(admin, base, name, [("p.png", data)], condition="drug", well="C07")
    assert response.status_code == 202
    row = response.json()["images"][0]

    key = f"uploads/{hashlib.sha256(data).hexdigest()}"
    stored = production.s3.get_object(production.bucket, key)
    assert stored.read() == data
    stored.close()
    with production.session() as session:
        assert session.get(Image, row["id"]).well == "C07"
        assert session.get(Job, row["job_id"]).status.value == "queued"

    again = upload(admin, base, name, [("p-again.png", data)])
    assert again.json()["images"][0]["id"] == row["id"] and again.json()["images"][0]["duplicate"] is True

    production.finish(row["job_id"], count=6, model_version="nucleus-prod-1")
    result = admin.get(f"{base}/api/v1/images/{row['id']}/result").json()
    assert (result["count"], result["model_version"]) == (6, "nucleus-prod-1")
    overlay = admin.get(base + result["links"]["overlay"])
    assert overlay.status_code == 200 and overlay.content.startswith(b"\x89PNG")
    listing = admin.get(f"{base}/api/v1/experiments/{name}/results?condition=drug").json()
    assert listing["total"] == 1 and listing["results"][0]["count"] == 6


def test_concurrent_identical_uploads_on_postgres(production):
    token = production.token("uploader")
    base, name = production.base_url, f"race-{uuid.uuid4().hex[:8]}"
    http(production, token).post(f"{base}/api/v1/experiments", json={"name": name})
    data = nuclei_image(101)
    answers, barrier = [], threading.Barrier(6)

    def send():
        session = http(production, token)
        barrier.wait()
        answers.append(upload(session, base, name, [("same.png", data)]))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(200 <= a.status_code < 300 for a in answers), [a.text for a in answers]
    assert len({a.json()["images"][0]["job_id"] for a in answers}) == 1
    assert sum(a.json()["images"][0]["duplicate"] is False for a in answers) == 1
    listing = http(production, token).get(f"{base}/api/v1/experiments/{name}/results").json()
    assert listing["total"] == 1
