"""The history's status filter on PostgreSQL, on an experiment that is most of its database (as in
bench/scale.py) with a rare status (2 % of its images failed): the failed jobs are read from their index
(migration 0007, jobs by status with their images), and the page costs what the REST list costs.

Before, the page's marker list searched for one result of each channel list among the matching images
(LIMIT 1); failed jobs have none, so the search walked the whole experiment on every view (1.4 s of
the page's 1.75 s at 100,000 images).

Each SELECT the API sends is EXPLAINed (after ANALYZE) as in test_scale_indexes; the cost of a request is
the shared buffers its statements touch (EXPLAIN ANALYZE, BUFFERS), which does not depend on the machine's load.
"""
from __future__ import annotations

import re
import pytest

from testkit.explain import built_database, harness_on, plans, statements

IMAGES = 20_000
FAILED = IMAGES // 50  # bench/scale.py's status_of: one image in 50 failed
BUFFERS = re.compile(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?")


@pytest.fixture(scope="module")
def database():
    """bench/scale.py's experiment of 20,000 images (one nucleus each) beside another of 200."""
    from bench import scale

    with built_database("nucleus_status",
                        lambda url: scale.build(url, images=IMAGES, nuclei=IMAGES, other_images=200)) as url:
        yield url, scale


@pytest.fixture(scope="module")
def harness(database, tmp_path_factory):
    with harness_on(database[0], tmp_path_factory.mktemp("data")) as harness:
        yield harness


@pytest.fixture(scope="module")
def clients(database, harness):
    """(REST client's get, signed-in page client's get)."""
    _url, scale = database
    return harness.client("admin").get, scale.signed_in(harness.app, harness.token("admin")).get


def explained(url: str, get, path: str, analyze: bool = False) -> list[str]:
    """The plans of the image-reading SELECTs that GET `path` sends (run with ANALYZE, BUFFERS when `analyze`)."""
    with statements(url, tables="images") as seen:
        response = get(path)
        assert response.status_code == 200, (path, response.status_code)
    assert seen, path
    return plans(url, seen, analyze=analyze)


def buffers(plan: str) -> int:
    """Shared buffers the statement touched: its top node's count, which includes every node below it."""
    for line in plan.splitlines():
        match = BUFFERS.search(line)
        if match:
            return sum(int(n or 0) for n in match.groups())
    raise AssertionError(f"no buffer counts in\n{plan}")


def test_the_rare_status_is_read_from_the_jobs_status_index(database, clients):
    url, _scale = database
    api, page = clients
    for get, path in ((api, "/api/v1/experiments/scale/results?status=failed"),
                      (page, "/experiments/scale?status=failed")):
        found = explained(url, get, path)
        for plan in found:
            assert not re.search(r"Seq Scan on (results|nuclei)\b", plan), plan
        # the count: the failed jobs, with their images and (created, id), from the index alone
        assert any("Index Only Scan using ix_jobs_status_image" in plan for plan in found), found


@pytest.mark.parametrize("query", ["status=failed", "status=queued", "status=failed&page=8"])
def test_the_page_costs_what_the_list_costs(database, clients, query):
    """The page shows the same rows as the REST list; its own reads (the marker list) stay small beside them."""
    url, _scale = database
    api, page = clients
    listed = sum(buffers(p) for p in explained(url, api, f"/api/v1/experiments/scale/results?{query}", analyze=True))
    shown = sum(buffers(p) for p in explained(url, page, f"/experiments/scale?{query}", analyze=True))
    assert listed < 20 * FAILED, listed  # the failed images and their jobs, not the experiment's 20,000
    assert shown <= listed * 1.5 + 200, (shown, listed)


def test_markers_follow_the_status_filter(clients):
    """Only done jobs have results, hence measured channels: the marker plot is offered for them alone."""
    _api, page = clients
    assert 'id="markers"' in page("/experiments/scale?status=done").get_data(as_text=True)
    assert 'id="markers"' in page("/experiments/scale").get_data(as_text=True)
    assert 'id="markers"' not in page("/experiments/scale?status=failed").get_data(as_text=True)
    assert page("/experiments/scale/plots/marker.png?status=failed&marker=hoechst").status_code == 400
    assert page("/experiments/scale/plots/marker.png?status=done&marker=hoechst").status_code == 200
