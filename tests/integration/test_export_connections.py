"""Streamed exports (CSV, Parquet, the archive; the pages share these responses) give their database connection back: read to
the end, or abandoned after the first chunk and closed as a WSGI server closes a body a client stopped
reading. More exports in a row than the pool holds leave nothing checked out, and the next request answers
at once, through Flask's test client and through a real threaded HTTP server."""
from __future__ import annotations

import time

import pytest
import requests

from services.api import exports
from shared.infra.db.session import get_engine
from testkit.api import nuclei_image
from testkit.served import served_api

PATHS = ["/api/v1/experiments/{name}/nuclei.csv", "/api/v1/experiments/{name}/results?format=csv",
         "/api/v1/experiments/{name}/nuclei.parquet", "/api/v1/experiments/{name}/archive.zip"]


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setattr(exports, "STREAM_BATCH", 1)  # one row a chunk: the first chunks hold the cursor open
    with served_api(tmp_path, export_rate="") as harness:
        client = harness.client("admin")
        assert client.post("/api/v1/experiments", json={"name": "leak"}).status_code == 201
        response = client.upload("leak", [(f"{i}.png", nuclei_image(i)) for i in range(3)])
        assert response.status_code == 202, response.get_data(as_text=True)
        for row in response.json["images"]:
            harness.finish(row["job_id"], count=3)
        yield harness, client


def _pool(harness):
    return get_engine(harness.url).pool


def test_exports_in_a_row_through_the_test_client_leave_no_connection_out(api):
    harness, client = api
    pool = _pool(harness)
    runs = pool.size() + pool._max_overflow + 10
    for i in range(runs):
        path = PATHS[i % len(PATHS)].format(name="leak")
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        if i % 2:
            assert response.get_data()  # read to the end
        else:
            chunks = iter(response.response)
            next(chunks), next(chunks, None)  # a client that stops reading; the server closes the body
        response.close()
        assert pool.checkedout() == 0, (i, path, pool.status())
    started = time.monotonic()
    assert client.get("/api/v1/experiments/leak/nuclei.csv").status_code == 200
    assert time.monotonic() - started < 5


def test_exports_in_a_row_through_a_real_server_leave_no_connection_out(api):
    harness, client = api
    pool = _pool(harness)
    headers = {"Authorization": client._headers(None)["Authorization"]}
    runs = pool.size() + pool._max_overflow + 10
    for i in range(runs):
        url = harness.http_url + PATHS[i % len(PATHS)].format(name="leak")
        with requests.get(url, headers=headers, stream=True, timeout=10) as response:
            assert response.status_code == 200, (url, response.status_code)
            if i % 2:
                assert response.content
            else:
                next(response.raw.stream(16))  # one chunk, then the connection is dropped
    deadline = time.monotonic() + 5
    while pool.checkedout() and time.monotonic() < deadline:  # the server thread notices the drop on its next write
        time.sleep(0.05)
    assert pool.checkedout() == 0, pool.status()
    started = time.monotonic()
    assert requests.get(harness.http_url + PATHS[0].format(name="leak"), headers=headers, timeout=10).ok
    assert time.monotonic() - started < 5
