"""The history, its filters, deep pages and the exports use the scale indexes (migration 0006) on
PostgreSQL: every SELECT the API sends for them is EXPLAINed, after ANALYZE, on a database whose
experiment is a small part of its tables (as in a facility with many experiments), and none reads
images, results or nuclei from end to end.

The statements are captured as the API sends them (SQLAlchemy's before_cursor_execute); a streamed
export's query is EXPLAINed as the cursor it runs in (EXPLAIN DECLARE), which is how PostgreSQL plans it.
"""
from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from testkit import servers
from testkit.env import apply_settings, clear_shared_caches

SCANNED = re.compile(r"Seq Scan on (images|results|nuclei)\b")


def dispose(url: str) -> None:
    """Close the pooled connections to `url` (before its database is dropped)."""
    from shared.infra.db.session import get_engine

    get_engine(url).dispose()


@pytest.fixture(scope="module")
def database():
    """bench/scale.py's experiment of 200 images (1,000 nuclei) beside another of 20,000 images (100,000)."""
    from bench import scale

    url = servers.create_database(servers.MACHINE_PG, prefix="nucleus_indexes")
    scale.build(url, images=200, nuclei=1_000, other_images=20_000)
    yield url, scale
    dispose(url)
    servers.drop_database(url)


@pytest.fixture(scope="module")
def harness(database, tmp_path_factory):
    from testkit.api import ApiHarness

    url, _scale = database
    monkeypatch = pytest.MonkeyPatch()
    yield ApiHarness(apply_settings(monkeypatch, tmp_path_factory.mktemp("data"), database_url=url))
    dispose(url)
    monkeypatch.undo()
    clear_shared_caches()


@pytest.fixture(scope="module")
def api(harness):
    client = harness.client("admin")
    return client.get


@contextmanager
def statements(url: str):
    """The SELECTs sent on `url`'s engine meanwhile: (sql, parameters, streamed)."""
    from shared.infra.db.session import get_engine

    engine, seen = get_engine(url), []

    def record(_conn, _cursor, statement, parameters, context, _many):
        if statement.lstrip().upper().startswith("SELECT") and re.search(r"\b(images|nuclei)\b", statement):
            seen.append((statement, parameters, bool(context.execution_options.get("stream_results"))))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plans(url: str, seen) -> list[str]:
    from shared.infra.db.session import get_engine

    result = []
    with get_engine(url).connect() as conn:
        for statement, parameters, streamed in seen:
            sql = f"EXPLAIN DECLARE explained CURSOR FOR {statement}" if streamed else f"EXPLAIN {statement}"
            with conn.begin():
                result.append("\n".join(row[0] for row in conn.exec_driver_sql(sql, parameters)))
    return result


def explain_request(database, api, path: str) -> list[str]:
    url, _scale = database
    with statements(url) as seen:
        response = api(path)
        assert response.status_code == 200, (path, response.status_code)
        response.get_data()  # a streamed download runs its queries while it is read
    assert seen, path
    return plans(url, seen)


HISTORY = {
    "": "ix_images_experiment_created",
    "?condition=cond-3": "ix_images_experiment_condition",
    "?well=B07": "ix_images_experiment_well",
    "?status=failed": "ix_jobs_image_created",
    "?page=4": "ix_images_experiment_created",  # the last page
    "?condition=cond-3&well=B07": "ix_images_experiment_",
}


@pytest.mark.parametrize("query", list(HISTORY))
def test_history_pages_and_filters_walk_indexes(database, api, query):
    found = explain_request(database, api, f"/api/v1/experiments/scale/results{query}")
    for plan in found:
        assert not SCANNED.search(plan), plan
    assert any(HISTORY[query] in plan for plan in found), found


@pytest.mark.parametrize("path", ["nuclei.csv", "nuclei.parquet", "results?format=csv", "nuclei.csv?condition=cond-3"])
def test_exports_walk_indexes(database, api, path):
    found = explain_request(database, api, f"/api/v1/experiments/scale/{path}")
    for plan in found:
        assert not SCANNED.search(plan), plan
    if path.startswith("nuclei"):
        assert any("ix_nuclei_result_label" in plan for plan in found), found


def test_the_page_itself_walks_indexes(database, harness):
    url, scale = database
    client = scale.signed_in(harness.app, harness.token("admin"))
    with statements(url) as seen:
        assert client.get("/experiments/scale?page=3&well=B07").status_code == 200
    for plan in plans(url, seen):
        assert not SCANNED.search(plan), plan
