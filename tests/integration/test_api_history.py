"""The history a lab searches, and the upload limits: filters, sorting and paging on the REST query
endpoint and the experiment page alike; plots that follow the filter; per-image and per-nucleus
exports as CSV and Parquet with every metadata column; the per-token upload rate limit (in process,
and shared through the machine's Redis as several API processes would)."""
from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone

import pytest

from shared.infra.db.tables import Image
from testkit.api import csrf_from, nuclei_image

PARQUET = "application/vnd.apache.parquet"


# Five images over three days, two conditions, three wells; four done, one failed.
PLATE = [  # (seed, condition, well, day of November 2026, count or None for failed, extra metadata)
    (101, "control", "A01", 1, 3, {"instrument_channel": "1"}),
    (102, "control", "A02", 2, 6, {"instrument_channel": "1"}),
    (103, "drug", "A01", 2, 9, {"instrument_channel": "2", "status": "from-the-lab"}),
    (104, "drug", "B01", 3, 12, {}),
    (105, "drug", "B01", 3, None, {}),
]


@pytest.fixture(scope="module")
def plate(harness, admin):
    """The experiment `history-plate` with PLATE in it; returns {seed: uploaded row}."""
    assert admin.post("/api/v1/experiments", json={"name": "history-plate"}).status_code == 201
    rows = {}
    for seed, condition, well, day, count, extra in PLATE:
        response = admin.upload("history-plate", [(f"img-{seed}.png", nuclei_image(seed))], condition=condition,
                                well=well, plate="P1", **extra)
        assert response.status_code == 202, response.json
        rows[seed] = response.json["images"][0]
        with harness.session() as session:
            session.get(Image, rows[seed]["id"]).created = datetime(2026, 11, day, 12, seed - 100)
        if count is None:
            harness.fail(rows[seed]["job_id"], "out of memory")
        else:
            harness.finish(rows[seed]["job_id"], count=count, model_version="nucleus-history-1")
    return rows


def seeds(plate, rows) -> list[int]:
    by_id = {row["id"]: seed for seed, row in plate.items()}
    return [by_id[r["image_id"]] for r in rows]


def results(admin, query: str = "") -> dict:
    response = admin.get(f"/api/v1/experiments/history-plate/results?{query}")
    assert response.status_code == 200, response.json
    return response.json


# --- REST queries ------------------------------------------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("", [101, 102, 103, 104, 105]),
    ("condition=drug", [103, 104, 105]),
    ("well=A01", [101, 103]),
    ("status=failed", [105]),
    ("status=done&condition=drug", [103, 104]),
    ("created_from=2026-11-02", [102, 103, 104, 105]),
    ("created_to=2026-11-03", [101, 102, 103]),
    ("created_from=2026-11-02&created_to=2026-11-03", [102, 103]),
    ("created_from=2026-11-02T12:03:00Z", [103, 104, 105]),
    ("sort=-count&status=done", [104, 103, 102, 101]),
    ("sort=well", [101, 103, 102, 104, 105]),
    ("sort=-created", [105, 104, 103, 102, 101]),
])
def test_results_filter_and_sort(admin, plate, query, expected):
    body = results(admin, query)
    assert seeds(plate, body["results"]) == expected
    assert body["total"] == len(expected)


def test_results_paginate_with_the_filter_kept(admin, plate):
    pages = [results(admin, f"condition=drug&sort=created&per_page=2&page={n}") for n in (1, 2, 3)]
    assert [seeds(plate, p["results"]) for p in pages] == [[103, 104], [105], []]
    assert {(p["total"], p["per_page"]) for p in pages} == {(3, 2)}
    assert [p["page"] for p in pages] == [1, 2, 3]


@pytest.mark.parametrize("query", ["created_to=03/11/2026", "status=lost", "sort=size", "page=0", "per_page=1001",
                                   "format=xlsx"])
def test_bad_queries_are_400_with_a_reason(admin, plate, query):
    response = admin.get(f"/api/v1/experiments/history-plate/results?{query}")
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_query"
    assert response.json["error"]["message"]


def test_result_rows_carry_metadata_and_free_metadata(admin, plate):
    row = results(admin, "well=A02")["results"][0]
    assert (row["filename"], row["condition"], row["well"], row["plate"], row["status"], row["count"],
            row["model_version"]) == ("img-102.png", "control", "A02", "P1", "done", 6, "nucleus-history-1")
    assert row["created"].startswith("2026-11-02T12:02") and row["extra"] == {"instrument_channel": "1"}


# --- exports -----------------------------------------------------------------------------------

def read_csv(response) -> list[dict]:
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.data.decode())))


def read_parquet(response):
    import pyarrow.parquet as pq

    assert response.status_code == 200 and response.mimetype == PARQUET
    assert response.data.startswith(b"PAR1")
    return pq.read_table(io.BytesIO(response.data))


def test_per_image_csv_has_every_metadata_column(admin, plate):
    table = read_csv(admin.get("/api/v1/experiments/history-plate/results?format=csv&sort=created"))
    assert [r["filename"] for r in table] == [f"img-{s}.png" for s in (101, 102, 103, 104, 105)]
    columns = list(table[0])
    assert columns[:4] == ["image_id", "job_id", "filename", "condition"]
    # free metadata after the fixed columns; a key that clashes with one is renamed, never overwrites it
    assert columns[-2:] == ["instrument_channel", "extra_status"]  # sorted by key
    assert [r["instrument_channel"] for r in table] == ["1", "1", "2", "", ""]
    assert [r["status"] for r in table] == ["done", "done", "done", "done", "failed"]
    assert table[2]["extra_status"] == "from-the-lab"
    assert [r["count"] for r in table] == ["3", "6", "9", "12", ""]
    assert table[4]["error"] == "out of memory"


def test_per_image_parquet_is_typed_and_filtered(admin, plate):
    import pyarrow as pa

    table = read_parquet(admin.get("/api/v1/experiments/history-plate/results?format=parquet&condition=drug"
                                   "&sort=created"))
    assert table.num_rows == 3
    assert table.schema.field("count").type == pa.int64()
    assert table.schema.field("area_mean").type == pa.float64()
    assert table.schema.field("created").type == pa.timestamp("us", tz="UTC")
    rows = table.to_pylist()
    assert [r["count"] for r in rows] == [9, 12, None]
    assert rows[0]["created"] == datetime(2026, 11, 2, 12, 3, tzinfo=timezone.utc)
    assert (rows[0]["instrument_channel"], rows[0]["extra_status"]) == ("2", "from-the-lab")


def test_per_nucleus_csv_and_parquet_agree_and_follow_the_filter(admin, plate):
    every = read_csv(admin.get("/api/v1/experiments/history-plate/nuclei.csv"))
    assert len(every) == 3 + 6 + 9 + 12
    assert {"image_id", "filename", "condition", "well", "plate", "created", "model_version", "label", "area",
            "mean_intensity", "instrument_channel", "extra_status"} <= set(every[0])
    first = every[0]
    assert (first["filename"], first["condition"], first["well"], first["plate"], first["label"],
            first["instrument_channel"]) == ("img-101.png", "control", "A01", "P1", "1", "1")
    assert first["created"].startswith("2026-11-01T12:01:00")

    window = "created_from=2026-11-02&created_to=2026-11-03"
    narrow = read_csv(admin.get(f"/api/v1/experiments/history-plate/nuclei.csv?{window}&well=A01"))
    assert {r["filename"] for r in narrow} == {"img-103.png"} and len(narrow) == 9
    table = read_parquet(admin.get(f"/api/v1/experiments/history-plate/nuclei.parquet?{window}"))
    assert table.num_rows == 6 + 9
    assert sorted(set(table.column("filename").to_pylist())) == ["img-102.png", "img-103.png"]
    assert table.column("label").type.bit_width == 64 and table.column("area").to_pylist()[:2] == [4.0, 6.0]
    assert read_parquet(admin.get("/api/v1/experiments/history-plate/nuclei.parquet?status=failed")).num_rows == 0


def test_an_empty_experiment_exports_empty_tables_with_headers(admin):
    assert admin.post("/api/v1/experiments", json={"name": "history-empty"}).status_code == 201
    csv_text = admin.get("/api/v1/experiments/history-empty/nuclei.csv").data.decode()
    assert csv_text.startswith("image_id,filename,") and csv_text.count("\n") == 1
    table = read_parquet(admin.get("/api/v1/experiments/history-empty/nuclei.parquet"))
    assert table.num_rows == 0 and "area" in table.column_names
    assert read_parquet(admin.get("/api/v1/experiments/history-empty/results?format=parquet")).num_rows == 0


def test_exports_respect_projects(harness, plate):
    outsider = harness.client("viewer", project="history-elsewhere")
    for path in ("/api/v1/experiments/history-plate/nuclei.parquet",
                 "/api/v1/experiments/history-plate/results?format=parquet"):
        assert outsider.get(path).status_code == 404, path
        assert harness.client(None).get(path).status_code == 401, path


# --- the experiment page -----------------------------------------------------------------------

def sign_in(harness, role="admin", project=None, app=None):
    client = (app or harness.app).test_client()
    client.post("/login", data={"token": harness.token(role, project),
                                "csrf_token": csrf_from(client.get("/login").data)})
    return client, csrf_from(client.get("/").data)


def row_files(html: str) -> list[str]:
    return re.findall(r'<td class="filename"><a href="[^"]+">([^<]+)</a>', html)


def test_the_page_filters_sorts_and_pages_like_the_api(harness, plate):
    client, _ = sign_in(harness)
    page = client.get("/experiments/history-plate?condition=drug&sort=-count&status=done").data.decode()
    assert row_files(page) == ["img-104.png", "img-103.png"]
    assert "2 images match" in page
    assert 'value="drug"' in page and '<option selected>done</option>' in page  # the form keeps the filter

    first = client.get("/experiments/history-plate?per_page=2&sort=created&created_from=2026-11-02").data.decode()
    assert row_files(first) == ["img-102.png", "img-103.png"] and "page 1 of 2" in first
    next_link = re.search(r'<a href="([^"]+)">next', first).group(1).replace("&amp;", "&")
    assert "created_from=2026-11-02" in next_link and "page=2" in next_link
    second = client.get(next_link).data.decode()
    assert row_files(second) == ["img-104.png", "img-105.png"] and "page 2 of 2" in second


def test_the_page_links_plots_and_exports_with_its_filter(harness, plate):
    client, _ = sign_in(harness)
    page = client.get("/experiments/history-plate?condition=control").data.decode().replace("&amp;", "&")
    plots = re.findall(r'<img alt="[^"]+" src="([^"]+)" data-plot>', page)
    assert len(plots) == 3 and all("condition=control" in url for url in plots)
    downloads = re.findall(r'href="(/experiments/history-plate/(?:results|nuclei)\.(?:csv|parquet)[^"]*)"', page)
    assert len(downloads) == 4 and all("condition=control" in url for url in downloads)
    assert len(read_csv(client.get(next(u for u in downloads if "nuclei.csv" in u)))) == 3 + 6
    assert read_parquet(client.get(next(u for u in downloads if "results.parquet" in u))).num_rows == 2
    for url in plots:
        response = client.get(url)
        assert response.status_code == 200 and response.data.startswith(b"\x89PNG"), url


def test_plots_follow_the_filter(harness, plate, admin):
    client, _ = sign_in(harness)
    admin.post("/api/v1/experiments", json={"name": "history-blank"})
    base = "/experiments/history-plate/plots"
    for plot in ("counts", "plate", "areas"):
        nothing = client.get(f"{base}/{plot}.png?condition=nobody").data
        assert nothing == client.get(f"/experiments/history-blank/plots/{plot}.png").data, plot  # the empty plot
        everything = client.get(f"{base}/{plot}.png").data
        drug = client.get(f"{base}/{plot}.png?condition=drug").data
        assert len({nothing, everything, drug}) == 3, plot


# --- upload rate limits ------------------------------------------------------------------------

def limited_app(harness, per_minute: int, **settings):
    from services.api import create_app

    app = create_app(harness.settings.model_copy(update={"upload_rate_per_minute": per_minute, **settings}))
    app.config["TESTING"] = True
    return app


def upload(app, token: str, experiment: str, seeds: list[int]):
    files = [(io.BytesIO(nuclei_image(seed)), f"{seed}.png") for seed in seeds]
    return app.test_client().post(f"/api/v1/experiments/{experiment}/images", data={"file": files},
                                  headers={"Authorization": f"Bearer {token}"}, content_type="multipart/form-data")


def test_uploads_over_the_rate_are_429_with_retry_after(harness, admin):
    admin.post("/api/v1/experiments", json={"name": "history-rate"})
    app = limited_app(harness, per_minute=3)
    token, other = harness.token("uploader"), harness.token("uploader")
    assert upload(app, token, "history-rate", [201, 202]).status_code == 202
    images = harness.count(Image)

    refused = upload(app, token, "history-rate", [203, 204])
    assert refused.status_code == 429 and refused.is_json
    assert refused.json["error"]["code"] == "rate_limited" and "3 files per minute" in refused.json["error"]["message"]
    assert 55 <= int(refused.headers["Retry-After"]) <= 61  # the minute's first files leave the window in 60 s
    assert harness.count(Image) == images  # nothing of a refused request is stored

    assert upload(app, token, "history-rate", [205]).status_code == 202  # what is left of the minute
    assert upload(app, other, "history-rate", [206, 207, 208]).status_code == 202  # every token has its own
    too_many = upload(app, other, "history-rate", list(range(210, 214)))
    assert too_many.status_code == 429 and "fewer files per request" in too_many.json["error"]["message"]


def test_the_upload_form_explains_the_rate_limit(harness, admin):
    admin.post("/api/v1/experiments", json={"name": "history-rate-web"})
    app = limited_app(harness, per_minute=1)
    client, csrf = sign_in(harness, "uploader", app=app)
    for seed, expected in ((301, "1 image(s) queued"), (302, "Nothing was uploaded. too many uploads")):
        response = client.post("/experiments/history-rate-web/upload", content_type="multipart/form-data",
                               data={"csrf_token": csrf, "file": [(io.BytesIO(nuclei_image(seed)), "a.png")]})
        assert response.status_code == 303
        assert expected in client.get("/experiments/history-rate-web").data.decode()


def test_redis_buckets_are_shared_by_api_processes(harness, admin, redis_url):
    """With a Redis broker (production), two API processes count against one bucket per token."""
    import redis

    admin.post("/api/v1/experiments", json={"name": "history-rate-redis"})
    first, second = (limited_app(harness, per_minute=2, broker_url=redis_url) for _ in range(2))
    token = harness.token("uploader")
    assert upload(first, token, "history-rate-redis", [401]).status_code == 202
    assert upload(second, token, "history-rate-redis", [402]).status_code == 202
    refused = upload(first, token, "history-rate-redis", [403])
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert any(b"/nucleus/uploads/" in key for key in redis.Redis.from_url(redis_url).keys())


def test_an_unreachable_redis_never_blocks_uploads(harness, admin):
    admin.post("/api/v1/experiments", json={"name": "history-rate-down"})
    app = limited_app(harness, per_minute=1, broker_url="redis://127.0.0.1:1/0")
    token = harness.token("uploader")
    for seeds in ([501], [502]):
        assert upload(app, token, "history-rate-down", seeds).status_code == 202
