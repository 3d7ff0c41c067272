"""The history, its filters, deep pages and the exports use the scale indexes (migration 0006) on
PostgreSQL: every SELECT the API sends for them is EXPLAINed, after ANALYZE, on a database whose
experiment is a small part of its tables (as in a facility with many experiments), and none reads
images, results or nuclei from end to end.

The statements are captured as the API sends them (SQLAlchemy's before_cursor_execute); a streamed
export's query is EXPLAINed as the cursor it runs in (EXPLAIN DECLARE), which is how PostgreSQL plans it.
"""
from __future__ import annotations

import re
import pytest

from testkit.explain import built_database, harness_on, plans, statements

SCANNED = re.compile(r"Seq Scan on (images|results|nuclei)\b")


@pytest.fixture(scope="module")
def database():
    """bench/scale.py's experiment of 200 images (1,000 nuclei) beside another of 20,000 images (100,000)."""
    from bench import scale

    with built_database("nucleus_indexes",
                        lambda url: scale.build(url, images=200, nuclei=1_000, other_images=20_000)) as url:
        yield url, scale


@pytest.fixture(scope="module")
def harness(database, tmp_path_factory):
    with harness_on(database[0], tmp_path_factory.mktemp("data")) as harness:
        yield harness


@pytest.fixture(scope="module")
def api(harness):
    client = harness.client("admin")
    return client.get


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
