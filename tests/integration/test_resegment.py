"""Re-segmenting an experiment with another model version through the API and the experiment page: one new
job per (filtered) image naming the version, nothing twice, every result keeping its version; the image's
result and the history show the newest, `?version=` the older ones, and a per-version count summary compares
them. Jobs are finished the way a worker finishes them (testkit.api.ApiHarness.finish)."""
from __future__ import annotations

import hashlib

import pytest

from shared.infra import registry
from shared.infra.db.tables import Job, ModelVersion
from testkit.api import nuclei_image, sign_in

OLD, NEW = "nucleus-reseg-0000aaaa", "nucleus-reseg-0000bbbb"
PLATE = [(301, "control", "A01"), (302, "control", "A02"), (303, "drug", "B01")]


def register(harness, version: str) -> None:
    raw = f"weights of {version}".encode()
    harness.store.put(registry.object_key(version), raw)
    with harness.session() as session:
        session.add(ModelVersion(version=version, parent=None, object_key=registry.object_key(version),
                                 sha256=hashlib.sha256(raw).hexdigest(), training_summary={}, metrics={}))


@pytest.fixture(scope="module")
def plate(harness, admin):
    """`reseg-plate`: three images segmented by OLD (counts 3, 4, 5); NEW registered beside it."""
    register(harness, OLD)
    register(harness, NEW)
    assert admin.post("/api/v1/experiments", json={"name": "reseg-plate"}).status_code == 201
    images = {}
    for i, (seed, condition, well) in enumerate(PLATE):
        row = admin.upload("reseg-plate", [(f"img-{seed}.png", nuclei_image(seed))], condition=condition,
                           well=well).json["images"][0]
        harness.finish(row["job_id"], count=3 + i, model_version=OLD)
        images[seed] = row
    return images


def jobs_of(harness, image_id: str) -> list[Job]:
    with harness.session() as session:
        jobs = session.query(Job).filter(Job.image_id == image_id).order_by(Job.created).all()
        session.expunge_all()
        return jobs


def history(admin, **query) -> dict[str, dict]:
    body = admin.get("/api/v1/experiments/reseg-plate/results", query_string=query).json
    return {row["filename"]: row for row in body["results"]}


def test_resegmenting_part_of_an_experiment_keeps_every_version(harness, admin, plate):
    control = [plate[301]["id"], plate[302]["id"]]
    response = admin.post("/api/v1/experiments/reseg-plate/resegment", json={"version": NEW, "condition": "control"})
    assert response.status_code == 202, response.json
    assert response.json["jobs"] == 2 and response.json["skipped"] == 0 and response.json["version"] == NEW
    new_jobs = response.json["job_ids"]
    assert [len(jobs_of(harness, image_id)) for image_id in control] == [2, 2]
    assert len(jobs_of(harness, plate[303]["id"])) == 1
    assert {jobs_of(harness, image_id)[-1].model_version for image_id in control} == {NEW}

    # asked again while they run: nothing new
    again = admin.post("/api/v1/experiments/reseg-plate/resegment", json={"version": NEW, "condition": "control"})
    assert again.status_code == 202 and again.json["jobs"] == 0 and again.json["skipped"] == 2

    # while re-segmenting, the image's result is still the old one; the history shows the running job
    assert admin.get(f"/api/v1/images/{control[0]}/result").json["model_version"] == OLD
    rows = history(admin)
    assert rows["img-301.png"]["status"] == "queued" and rows["img-303.png"]["model_version"] == OLD

    for job_id, count in zip(new_jobs, (10, 20)):
        harness.finish(job_id, count=count, model_version=NEW)
    newest = admin.get(f"/api/v1/images/{control[0]}/result").json
    assert newest["model_version"] == NEW and newest["count"] == 10 and newest["job_id"] == new_jobs[0]
    older = admin.get(f"/api/v1/images/{control[0]}/result?version={OLD}").json
    assert older["model_version"] == OLD and older["count"] == 3
    assert admin.get(f"/api/v1/images/{control[0]}/result?version=nucleus-never").status_code == 404
    listed = admin.get(f"/api/v1/images/{control[0]}/results").json
    assert listed["total"] == 2 and [r["model_version"] for r in listed["results"]] == [NEW, OLD]

    rows = history(admin)
    assert len(rows) == 3  # one row per image, not per job
    assert {name: (r["model_version"], r["count"]) for name, r in rows.items()} == {
        "img-301.png": (NEW, 10), "img-302.png": (NEW, 20), "img-303.png": (OLD, 5)}
    assert {name: r["count"] for name, r in history(admin, version=OLD).items()} == {
        "img-301.png": 3, "img-302.png": 4, "img-303.png": 5}
    assert set(history(admin, version=NEW)) == {"img-301.png", "img-302.png"}

    versions = admin.get("/api/v1/experiments/reseg-plate/versions").json["versions"]
    by_version = {v["model_version"]: v for v in versions}
    assert by_version[OLD]["images"] == 3 and by_version[OLD]["count_total"] == 12
    assert by_version[NEW]["images"] == 2 and by_version[NEW]["count_total"] == 30
    assert by_version[NEW]["count_mean"] == 15
    control_only = admin.get("/api/v1/experiments/reseg-plate/versions?condition=control").json["versions"]
    assert {v["model_version"]: v["count_total"] for v in control_only} == {OLD: 7, NEW: 30}

    # done with that version: asking again adds nothing; the drug image still can be
    done = admin.post("/api/v1/experiments/reseg-plate/resegment", json={"version": NEW})
    assert done.json["jobs"] == 1 and done.json["skipped"] == 2
    harness.finish(done.json["job_ids"][0], count=7, model_version=NEW)


def test_the_default_is_the_projects_active_version(harness, admin, plate):
    with harness.session() as session:
        registry.activate(session, OLD)
    response = admin.post("/api/v1/experiments/reseg-plate/resegment", json={"well": "B01"})
    assert response.status_code == 202 and response.json["version"] == OLD
    # B01 already has an OLD result: nothing to do
    assert response.json["jobs"] == 0 and response.json["skipped"] == 1


def test_bad_requests_change_nothing(harness, admin, plate):
    before = harness.count(Job)
    for body, status in (({"version": "nucleus-never-made"}, 404), ({"status": "finished"}, 400),
                         ({"condition": 3}, 400), ([1], 400), ({"version": ""}, 400)):
        response = admin.post("/api/v1/experiments/reseg-plate/resegment", json=body)
        assert response.status_code == status, body
        assert response.json["error"]["message"], body
    garbled = admin.post("/api/v1/experiments/reseg-plate/resegment", data="{no", content_type="application/json")
    assert garbled.status_code == 400
    assert admin.post("/api/v1/experiments/nope/resegment", json={}).status_code == 404
    assert harness.client("viewer").post("/api/v1/experiments/reseg-plate/resegment", json={}).status_code == 403
    harness.store.delete(registry.object_key(OLD))
    try:
        missing = admin.post("/api/v1/experiments/reseg-plate/resegment", json={"version": OLD})
        assert missing.status_code == 409 and missing.json["error"]["code"] == "model_weights_missing"
    finally:
        harness.store.put(registry.object_key(OLD), f"weights of {OLD}".encode())
    assert harness.count(Job) == before


def test_the_experiment_page_resegments_the_filtered_images(harness, admin, plate):
    client, csrf = sign_in(harness)
    page = client.get("/experiments/reseg-plate?condition=drug").data.decode()
    assert 'id="resegment"' in page and 'name="condition" value="drug"' in page
    before = harness.count(Job)
    assert client.post("/experiments/reseg-plate/resegment", data={"condition": "drug"}).status_code == 400  # CSRF
    response = client.post("/experiments/reseg-plate/resegment",
                           data={"csrf_token": csrf, "condition": "drug", "version": OLD})
    assert response.status_code == 303
    assert harness.count(Job) == before  # the drug image has results from both versions already
    assert "skipped" in client.get("/experiments/reseg-plate").data.decode()
    with harness.session() as session:
        registry.activate(session, NEW)
    third = "nucleus-reseg-0000cccc"
    register(harness, third)
    response = client.post("/experiments/reseg-plate/resegment", data={"csrf_token": csrf, "version": third})
    assert response.status_code == 303 and harness.count(Job) == before + 3
    assert "Re-segmenting 3 image(s) with nucleus-reseg-0000cccc" in client.get("/experiments/reseg-plate").data.decode()
    viewer, viewer_csrf = sign_in(harness, "viewer")
    assert 'id="resegment"' not in viewer.get("/experiments/reseg-plate").data.decode()
    assert viewer.post("/experiments/reseg-plate/resegment", data={"csrf_token": viewer_csrf}).status_code == 403
