"""The JSON API on the embedded default (SQLite migrated by Alembic, the local object store, the
file-system broker), through Flask's test client: auth, isolation, intake, results, errors."""
from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import threading

import pytest
from flask import url_for
from werkzeug.serving import make_server

from shared.infra.db.tables import Image, Job
from testkit.api import nuclei_image, png_bomb, tiff_bytes

import numpy as np


def api_routes(app):
    """Every /api/v1 route with its methods and a URL filled with placeholder values."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        artifacts = ("labels.tif", "overlay.png", "nuclei.csv") if "artifact" in rule.arguments else (None,)
        for artifact in artifacts:
            values = {arg: artifact if arg == "artifact" else "x" for arg in rule.arguments}
            with app.test_request_context():
                url = url_for(rule.endpoint, **values)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                routes.append((method, url))
    return routes


# --- access ------------------------------------------------------------------------------------

def test_every_api_route_refuses_a_missing_or_wrong_token(harness):
    from services.api import create_app

    routes = api_routes(harness.app)
    assert len(routes) >= 12
    # many wrong tokens from one address: throttling off here (tests/integration/test_throttling.py covers it)
    client = create_app(harness.settings.model_copy(update={"auth_failure_limit": ""})).test_client()
    for method, url in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
            response = client.open(url, method=method, headers=headers)
            assert response.status_code == 401, (method, url, headers, response.status_code)
            assert response.json["error"]["code"] == "unauthorized"


def test_revoked_token_is_refused(harness):
    from shared.infra.auth import revoke_token, verify_token

    token = harness.token("viewer")
    client = harness.client(token=token)
    assert client.get("/api/v1/experiments").status_code == 200
    with harness.session() as session:
        revoke_token(session, verify_token(session, token).id)
    assert client.get("/api/v1/experiments").status_code == 401


def test_viewer_reads_but_may_not_write(harness, experiment):
    viewer = harness.client("viewer")
    assert viewer.get("/api/v1/experiments").status_code == 200
    assert viewer.get(f"/api/v1/experiments/{experiment}/results").status_code == 200
    created = viewer.post("/api/v1/experiments", json={"name": "viewer-made"})
    assert created.status_code == 403 and created.json["error"]["code"] == "forbidden"
    uploaded = viewer.upload(experiment, [("a.png", nuclei_image(1))])
    assert uploaded.status_code == 403 and uploaded.json["error"]["code"] == "forbidden"
    assert harness.client("admin").get(f"/api/v1/experiments/{experiment}/results").json["total"] == 0


def test_projects_are_isolated(harness, admin):
    lab_a = harness.client("uploader", project="lab-a")
    lab_b = harness.client("uploader", project="lab-b")
    made = lab_a.post("/api/v1/experiments", json={"name": "a-only"})
    assert made.status_code == 201 and made.json["project"] == "lab-a"
    image = lab_a.upload("a-only", [("a.png", nuclei_image(2))]).json["images"][0]

    for path in ("/api/v1/experiments/a-only", "/api/v1/experiments/a-only/results",
                 "/api/v1/experiments/a-only/nuclei.csv", f"/api/v1/images/{image['id']}",
                 f"/api/v1/images/{image['id']}/result", f"/api/v1/jobs/{image['job_id']}"):
        assert lab_b.get(path).status_code == 404, path
    assert lab_b.upload("a-only", [("b.png", nuclei_image(3))]).status_code == 404
    assert "a-only" not in [e["name"] for e in lab_b.get("/api/v1/experiments?per_page=1000").json["experiments"]]
    assert "a-only" in [e["name"] for e in lab_a.get("/api/v1/experiments?per_page=1000").json["experiments"]]
    # an admin sees every project; a scoped token may not write into another project
    assert admin.get(f"/api/v1/jobs/{image['job_id']}").status_code == 200
    assert lab_b.post("/api/v1/experiments", json={"name": "sneaky", "project": "lab-a"}).status_code == 403
    # names are unique in the whole instance
    assert lab_b.post("/api/v1/experiments", json={"name": "a-only"}).status_code == 409


# --- experiments -------------------------------------------------------------------------------

def test_create_and_list_experiments(harness, admin):
    made = admin.post("/api/v1/experiments", json={"name": "listed-1"})
    assert made.status_code == 201
    assert set(made.json) >= {"id", "name", "project"} and made.json["project"] == "default"
    assert admin.post("/api/v1/experiments", json={"name": "listed-2", "project": "screens"}).json["project"] == "screens"
    again = admin.post("/api/v1/experiments", json={"name": "listed-1"})
    assert again.status_code == 409 and again.json["error"]["code"] == "experiment_exists"

    listing = admin.get("/api/v1/experiments?per_page=1").json
    assert listing["per_page"] == 1 and listing["page"] == 1 and len(listing["experiments"]) == 1
    assert listing["total"] >= 2
    second = admin.get("/api/v1/experiments?per_page=1&page=2").json["experiments"]
    assert second[0]["name"] != listing["experiments"][0]["name"]


@pytest.mark.parametrize("body, status", [
    (None, 400), ([], 400), ({}, 400), ({"name": ""}, 400), ({"name": 5}, 400), ({"name": "a/b"}, 400),
    ({"name": "x" * 201}, 400), ({"name": "ok-name", "project": ""}, 400),
])
def test_create_experiment_refuses_bad_bodies(admin, body, status):
    response = admin.post("/api/v1/experiments", json=body) if body is not None else \
        admin.post("/api/v1/experiments", data="not json", content_type="application/json")
    assert response.status_code == status
    assert response.json["error"]["message"]


@pytest.mark.parametrize("query", ["per_page=1001", "per_page=0", "page=0", "page=abc", "per_page=-1"])
def test_paging_limits(admin, query):
    response = admin.get(f"/api/v1/experiments?{query}")
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_query"


# --- intake ------------------------------------------------------------------------------------

def test_upload_stores_bytes_rows_and_queues_a_job(harness, admin, experiment):
    from shared.infra.queue import queue_depth

    depth_before = queue_depth("segment")
    data = nuclei_image(10)
    response = admin.upload(experiment, [("plate1/A01.png", data)], condition="control", well="A01",
                            plate="P1", site="1", pixel_size_um="0.65")
    assert response.status_code == 202
    (row,) = response.json["images"]
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert row["status"] == "queued" and row["duplicate"] is False
    assert harness.store.get(f"uploads/{row['sha256']}") == data
    with harness.session() as session:
        image, job = session.get(Image, row["id"]), session.get(Job, row["job_id"])
        assert job.image_id == image.id and job.status.value == "queued"
        assert (image.filename, image.condition, image.well, image.plate, image.site) == \
            ("A01.png", "control", "A01", "P1", "1")
        assert image.pixel_size_um == pytest.approx(0.65) and (image.width, image.height) == (64, 64)
    assert queue_depth("segment") == depth_before + 1
    job = admin.get(f"/api/v1/jobs/{row['job_id']}").json
    assert (job["id"], job["status"], job["image_id"], job["error"]) == (row["job_id"], "queued", row["id"], None)


def test_upload_is_accepted_while_the_broker_is_down(harness, experiment, use_settings):
    """The job row is the truth: with no broker the job stays queued for the sweeper, and the upload is 202."""
    from services.api import create_app

    settings = use_settings(harness.settings.data_dir, broker_url="redis://127.0.0.1:1/0")
    app = create_app(settings)
    response = app.test_client().post(
        f"/api/v1/experiments/{experiment}/images", data={"file": [(io.BytesIO(nuclei_image(14)), "a.png")]},
        headers={"Authorization": f"Bearer {harness.token('uploader')}"}, content_type="multipart/form-data")
    assert response.status_code == 202
    with harness.session() as session:
        assert session.get(Job, response.json["images"][0]["job_id"]).status.value == "queued"


def test_same_bytes_again_is_the_same_image(harness, admin, experiment):
    data = nuclei_image(11)
    first = admin.upload(experiment, [("one.png", data)]).json["images"][0]
    images, jobs = harness.count(Image), harness.count(Job)
    again = admin.upload(experiment, [("renamed.png", data)])
    assert 200 <= again.status_code < 300
    (row,) = again.json["images"]
    assert (row["id"], row["job_id"], row["duplicate"]) == (first["id"], first["job_id"], True)
    assert (harness.count(Image), harness.count(Job)) == (images, jobs)
    # the same bytes in another experiment are a new image, but still one stored object
    admin.post("/api/v1/experiments", json={"name": f"{experiment}-other"})
    other = admin.upload(f"{experiment}-other", [("one.png", data)]).json["images"][0]
    assert other["id"] != first["id"] and other["duplicate"] is False
    assert harness.store.list(f"uploads/{first['sha256']}") == [f"uploads/{first['sha256']}"]


def test_the_same_file_twice_in_one_request_is_one_image(admin, experiment):
    data = nuclei_image(12)
    rows = admin.upload(experiment, [("a.png", data), ("b.png", data)]).json["images"]
    assert rows[0]["id"] == rows[1]["id"] and [r["duplicate"] for r in rows] == [False, True]


def test_concurrent_identical_uploads_make_one_image(harness, admin, experiment):
    """Real HTTP, eight threads at once: the unique constraint decides, every answer names one image."""
    import requests

    server = make_server("127.0.0.1", 0, harness.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    data = nuclei_image(13)
    answers, barrier = [], threading.Barrier(8)

    def send():
        barrier.wait()
        answers.append(requests.post(f"http://127.0.0.1:{server.server_port}/api/v1/experiments/{experiment}/images",
                                     headers={"Authorization": f"Bearer {admin.token}"},
                                     files=[("file", ("same.png", data))], timeout=60))
    try:
        senders = [threading.Thread(target=send) for _ in range(8)]
        for s in senders:
            s.start()
        for s in senders:
            s.join()
    finally:
        server.shutdown()
    assert all(200 <= a.status_code < 300 for a in answers), [a.text for a in answers]
    rows = [a.json()["images"][0] for a in answers]
    assert len({(r["id"], r["job_id"]) for r in rows}) == 1
    assert sum(not r["duplicate"] for r in rows) == 1
    assert admin.get(f"/api/v1/experiments/{experiment}/results").json["total"] == 1


def _truncated_png() -> bytes:
    data = nuclei_image(20, size=128)
    return data[: len(data) // 2]


def _corrupt_tiff() -> bytes:
    data = bytearray(tiff_bytes(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)))
    data[8:] = b"\xff" * (len(data) - 8)
    return bytes(data)


@pytest.mark.parametrize("name, content, status, code", [
    ("empty.png", b"", 400, "empty_file"),
    ("notes.txt", b"these are not the pixels you are looking for\n", 400, "unsupported_format"),
    ("cut.png", _truncated_png(), 400, "corrupt_image"),
    ("broken.tif", _corrupt_tiff(), 400, "corrupt_image"),
    ("bomb.png", png_bomb(20000, 20000), 413, "image_too_large"),
])
def test_bad_files_are_refused_and_nothing_is_stored(harness, admin, experiment, name, content, status, code):
    good = nuclei_image(30 + len(name))
    images, objects = harness.count(Image), len(harness.store.list("uploads/"))
    response = admin.upload(experiment, [("good.png", good), (name, content)], condition="c")
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    assert name in response.json["error"]["message"]
    assert (harness.count(Image), len(harness.store.list("uploads/"))) == (images, objects)


@pytest.mark.parametrize("fields, field", [
    ({"pixel_size_um": "abc"}, "pixel_size_um"), ({"pixel_size_um": "-1"}, "pixel_size_um"),
    ({"pixel_size_um": "nan"}, "pixel_size_um"), ({"channel": "a\x01b"}, "channel"), ({"z": "top"}, "z"),
    ({"t": "-1"}, "t"),
    ({"well": "W" * 21}, "well"), ({"condition": "a\x00b"}, "condition"),
])
def test_metadata_is_validated(harness, admin, experiment, fields, field):
    images = harness.count(Image)
    response = admin.upload(experiment, [("a.png", nuclei_image(40))], **fields)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_field" and field in response.json["error"]["message"]
    assert harness.count(Image) == images


def test_upload_needs_files_and_a_known_experiment(admin, experiment):
    none = admin.post(f"/api/v1/experiments/{experiment}/images", data={"condition": "x"},
                      content_type="multipart/form-data")
    assert none.status_code == 400 and none.json["error"]["code"] == "no_files"
    assert admin.upload("no-such-experiment", [("a.png", nuclei_image(41))]).status_code == 404


def test_a_channel_beyond_the_image_is_refused(admin, experiment):
    response = admin.upload(experiment, [("grey.png", nuclei_image(42))], channel="2")
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_channel"


def test_upload_over_the_size_limit_is_413_json(harness, experiment):
    from services.api import create_app

    small = create_app(harness.settings.model_copy(update={"max_upload_bytes": 2000}))
    token = harness.token("uploader")
    data = nuclei_image(43, size=256)
    assert len(data) > 2000
    client = small.test_client()
    for files in ([(io.BytesIO(data), "big.png")],  # one file over the per-file limit
                  [(io.BytesIO(nuclei_image(s, 48)), f"{s}.png") for s in range(20)]):  # the request over its cap
        response = client.post(f"/api/v1/experiments/{experiment}/images", data={"file": files},
                               headers={"Authorization": f"Bearer {token}"}, content_type="multipart/form-data")
        assert response.status_code == 413
        assert response.is_json and response.json["error"]["message"]


def test_a_decompression_bomb_is_refused_before_decoding(harness, experiment):
    from services.api import create_app

    strict = create_app(harness.settings.model_copy(update={"max_pixels": 1000}))
    response = strict.test_client().post(
        f"/api/v1/experiments/{experiment}/images", data={"file": [(io.BytesIO(nuclei_image(44)), "a.png")]},
        headers={"Authorization": f"Bearer {harness.token('uploader')}"}, content_type="multipart/form-data")
    assert response.status_code == 413 and "megapixels" in response.json["error"]["message"]


# --- results -----------------------------------------------------------------------------------

def test_result_before_and_after_the_job(harness, admin, experiment):
    row = admin.upload(experiment, [("r.png", nuclei_image(50))]).json["images"][0]
    pending = admin.get(f"/api/v1/images/{row['id']}/result")
    assert pending.status_code == 409 and pending.json["error"]["code"] == "not_ready"
    assert admin.get(f"/api/v1/images/{row['id']}/labels.tif").status_code == 409

    harness.finish(row["job_id"], count=4, model_version="nucleus-dsb2018-cafe0001")
    result = admin.get(f"/api/v1/images/{row['id']}/result")
    assert result.status_code == 200
    body = result.json
    assert (body["image_id"], body["count"], body["model_version"]) == (row["id"], 4, "nucleus-dsb2018-cafe0001")
    assert body["area"] == {"mean": 7.0, "median": 7.0, "min": 4.0, "max": 10.0}
    assert body["links"] == {"labels": f"/api/v1/images/{row['id']}/labels.tif",
                             "overlay": f"/api/v1/images/{row['id']}/overlay.png",
                             "nuclei_csv": f"/api/v1/images/{row['id']}/nuclei.csv",
                             "roiset": f"/api/v1/images/{row['id']}/RoiSet.zip",
                             "geojson": f"/api/v1/images/{row['id']}/nuclei.geojson",
                             "ome_tiff": f"/api/v1/images/{row['id']}/labels.ome.tif"}
    labels = admin.get(body["links"]["labels"])
    assert labels.status_code == 200 and labels.mimetype == "image/tiff"
    import tifffile
    assert len(np.unique(tifffile.imread(io.BytesIO(labels.data)))) == 5
    assert admin.get(body["links"]["overlay"]).data.startswith(b"\x89PNG")
    assert admin.get(body["links"]["nuclei_csv"]).data.decode().startswith("label,area")
    image = admin.get(f"/api/v1/images/{row['id']}").json
    assert (image["status"], image["count"], image["job_id"]) == ("done", 4, row["job_id"])


def test_a_failed_job_says_why(harness, admin, experiment):
    row = admin.upload(experiment, [("f.png", nuclei_image(51))]).json["images"][0]
    harness.fail(row["job_id"], "the model step broke on this image")
    job = admin.get(f"/api/v1/jobs/{row['job_id']}").json
    assert job["status"] == "failed" and "model step" in job["error"]
    result = admin.get(f"/api/v1/images/{row['id']}/result")
    assert result.status_code == 409 and result.json["error"]["code"] == "job_failed"


def test_experiment_results_filter_page_and_export(harness, admin, experiment):
    rows = {}
    for seed, condition, well in [(60, "control", "A01"), (61, "control", "A02"), (62, "drug", "B01")]:
        rows[seed] = admin.upload(experiment, [(f"{seed}.png", nuclei_image(seed))], condition=condition,
                                  well=well, channel="0").json["images"][0]
    harness.finish(rows[60]["job_id"], count=2)
    harness.finish(rows[62]["job_id"], count=5)

    listing = admin.get(f"/api/v1/experiments/{experiment}/results").json
    assert (listing["total"], listing["page"], listing["per_page"]) == (3, 1, 50)
    first = listing["results"][0]
    assert set(first) >= {"image_id", "filename", "condition", "well", "plate", "site", "channel", "pixel_size_um",
                          "status", "count", "model_version", "created", "area_mean"}
    assert [r["count"] for r in listing["results"]] == [2, None, 5]
    assert [r["status"] for r in listing["results"]] == ["done", "queued", "done"]

    control = admin.get(f"/api/v1/experiments/{experiment}/results?condition=control").json
    assert {r["image_id"] for r in control["results"]} == {rows[60]["id"], rows[61]["id"]}
    assert admin.get(f"/api/v1/experiments/{experiment}/results?well=B01").json["results"][0]["count"] == 5
    assert admin.get(f"/api/v1/experiments/{experiment}/results?status=queued").json["total"] == 1
    assert admin.get(f"/api/v1/experiments/{experiment}/results?status=bogus").status_code == 400
    by_count = admin.get(f"/api/v1/experiments/{experiment}/results?sort=-count&status=done").json["results"]
    assert [r["count"] for r in by_count] == [5, 2]
    assert admin.get(f"/api/v1/experiments/{experiment}/results?sort=bogus").status_code == 400
    assert admin.get(f"/api/v1/experiments/{experiment}/results?created_from=yesterday").status_code == 400
    assert admin.get(f"/api/v1/experiments/{experiment}/results?created_from=2000-01-01").json["total"] == 3
    assert admin.get(f"/api/v1/experiments/{experiment}/results?created_to=2000-01-01").json["total"] == 0
    paged = admin.get(f"/api/v1/experiments/{experiment}/results?per_page=2&page=2").json
    assert len(paged["results"]) == 1 and paged["total"] == 3

    exported = admin.get(f"/api/v1/experiments/{experiment}/results?format=csv&condition=control")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(exported.data.decode())))
    assert {r["image_id"] for r in table} == {rows[60]["id"], rows[61]["id"]}
    assert {"filename", "condition", "well", "status", "count", "model_version", "created"} <= set(table[0])

    nuclei = admin.get(f"/api/v1/experiments/{experiment}/nuclei.csv")
    assert nuclei.status_code == 200 and nuclei.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(nuclei.data.decode())))
    assert len(table) == 7
    assert {r["condition"] for r in table} == {"control", "drug"}
    assert {"image_id", "filename", "well", "label", "area", "mean_intensity"} <= set(table[0])


# --- the rest ----------------------------------------------------------------------------------

def test_errors_are_json_not_html(admin):
    for response, status in ((admin.get("/api/v1/nothing-here"), 404),
                             (admin.client.put("/api/v1/experiments", headers=admin._headers(None)), 405),
                             (admin.get("/api/v1/images/nope"), 404), (admin.get("/api/v1/jobs/nope"), 404)):
        assert response.status_code == status and response.is_json
        assert set(response.json["error"]) >= {"code", "message"}


def test_openapi_document_is_valid_and_covers_every_route(harness, admin):
    from openapi_spec_validator import validate

    document = admin.get("/api/v1/openapi.json").json
    validate(document)
    documented = {(method.upper(), "/api/v1" + path) for path, item in document["paths"].items() for method in item}
    for rule in harness.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        if "<any(" in rule.rule:
            paths = [rule.rule.split("<any(")[0] + a for a in ("labels.tif", "overlay.png", "nuclei.csv")]
        else:
            paths = [rule.rule]
        for path in paths:
            path = path.replace("<", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (method, path) in documented, (method, path)


def test_healthz_is_open(admin, harness):
    response = harness.app.test_client().get("/healthz")
    assert response.status_code == 200 and response.json["status"] == "ok"


def test_database_down_is_503_with_retry_after(harness):
    from services.api import create_app

    down = create_app(harness.settings.model_copy(update={
        "database_url": "postgresql+psycopg2://nobody@127.0.0.1:1/none?connect_timeout=2"}))
    client = down.test_client()
    health = client.get("/healthz")
    assert health.status_code == 503 and health.headers["Retry-After"]
    api = client.get("/api/v1/experiments", headers={"Authorization": "Bearer whatever"})
    assert api.status_code == 503 and api.headers["Retry-After"]
    assert api.json["error"]["code"] == "database_unavailable"


def test_object_store_down_is_503_and_nothing_is_recorded(harness, experiment):
    from services.api import create_app

    dark = create_app(harness.settings.model_copy(update={"s3_endpoint": "127.0.0.1:1"}))
    images = harness.count(Image)
    response = dark.test_client().post(
        f"/api/v1/experiments/{experiment}/images", data={"file": [(io.BytesIO(nuclei_image(70)), "a.png")]},
        headers={"Authorization": f"Bearer {harness.token('uploader')}"}, content_type="multipart/form-data")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.json["error"]["code"] == "storage_unavailable"
    assert harness.count(Image) == images


def test_the_api_never_imports_the_model():
    code = ("import sys; from services.api import create_app; import services.api.wsgi; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime') "
            "or m in ('shared.domain.model.segmenter', 'shared.domain.model.onnx_inference')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
