"""Training runs and model versions through the JSON API on the embedded default: roles, creating and
reading runs (recorded in SQL and delivered to the `train` queue, or kept queued when the broker is
down), the model list, activation and rollback (registry rows inserted directly), and the torch-free
registration of the shipped weights from their version sidecar."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from shared.domain.model import weights_file
from shared.infra import registry
from shared.infra.db.tables import JobStatus, ModelVersion, TrainingRun, utcnow
from testkit.env import clear_shared_caches


def train_queue_depth() -> int:
    from shared.infra.queue import TRAIN_QUEUE, queue_depth

    depth = queue_depth(TRAIN_QUEUE)
    assert depth is not None
    return depth


# --- access ------------------------------------------------------------------------------------

ROUTES = (("POST", "/api/v1/training-runs"), ("GET", "/api/v1/training-runs"), ("GET", "/api/v1/training-runs/x"),
          ("GET", "/api/v1/models"), ("POST", "/api/v1/models/x/activate"))


def test_training_and_model_routes_refuse_a_missing_token(harness):
    client = harness.app.test_client()
    for method, url in ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.open(url, method=method, headers=headers, json={} if method == "POST" else None)
            assert response.status_code == 401, (method, url)


def test_only_an_admin_starts_runs_and_activates_models(harness, admin):
    runs_before = harness.count(TrainingRun)
    for role in ("viewer", "uploader"):
        client = harness.client(role)
        started = client.post("/api/v1/training-runs", json={"epochs": 1})
        assert started.status_code == 403 and started.json["error"]["code"] == "forbidden", role
        assert client.post("/api/v1/models/anything/activate").status_code == 403, role
        assert client.get("/api/v1/training-runs").status_code == 200, role
        assert client.get("/api/v1/models").status_code == 200, role
    assert harness.count(TrainingRun) == runs_before


# --- runs --------------------------------------------------------------------------------------

def test_a_run_is_recorded_then_delivered_to_the_trainer_queue(harness, admin):
    depth = train_queue_depth()
    response = admin.post("/api/v1/training-runs", json={"epochs": 3, "force_promote": True})
    assert response.status_code == 202 and set(response.json) == {"id"}
    run = admin.get(f"/api/v1/training-runs/{response.json['id']}").json
    assert run["id"] == response.json["id"] and run["status"] == "queued" and run["progress"] == 0
    assert run["epochs"] == 3 and run["force_promote"] is True
    assert run["version"] is None and run["promoted"] is None and run["metrics"] == {} and run["error"] is None
    assert run["created"] and run["started"] is None and run["finished"] is None
    assert train_queue_depth() == depth + 1


def test_a_run_without_a_body_takes_the_defaults(admin):
    response = admin.post("/api/v1/training-runs")
    assert response.status_code == 202
    run = admin.get(f"/api/v1/training-runs/{response.json['id']}").json
    assert run["epochs"] == 1 and run["force_promote"] is False


def test_bad_run_requests_are_refused(harness, admin):
    before = harness.count(TrainingRun)
    for body in ({"epochs": 0}, {"epochs": 101}, {"epochs": "2"}, {"epochs": True}, {"epochs": 1.5},
                 {"force_promote": "yes"}, [1]):
        response = admin.post("/api/v1/training-runs", json=body)
        assert response.status_code == 400, body
        assert response.json["error"]["message"], body
    garbled = admin.post("/api/v1/training-runs", data="{not json", content_type="application/json")
    assert garbled.status_code == 400 and garbled.json["error"]["code"] == "invalid_body"
    assert harness.count(TrainingRun) == before
    assert admin.get("/api/v1/training-runs/nope").status_code == 404


def test_runs_are_listed_newest_first_with_paging(harness, admin):
    ids = [admin.post("/api/v1/training-runs", json={"epochs": e}).json["id"] for e in (1, 2)]
    listed = admin.get("/api/v1/training-runs?per_page=1").json
    assert listed["total"] == harness.count(TrainingRun) and listed["per_page"] == 1 and listed["page"] == 1
    assert [r["id"] for r in listed["training_runs"]] == [ids[-1]]
    second = admin.get("/api/v1/training-runs?per_page=1&page=2").json["training_runs"]
    assert second[0]["id"] == ids[0]
    assert admin.get("/api/v1/training-runs?per_page=0").status_code == 400


def test_a_run_finished_by_the_trainer_reads_back(harness, admin):
    run_id = admin.post("/api/v1/training-runs", json={}).json["id"]
    with harness.session() as session:
        run = session.get(TrainingRun, run_id)
        run.status, run.progress, run.version, run.promoted = JobStatus.done, 1.0, "nucleus-ft-0badc0de", False
        run.metrics = {"validation": {"dsb_score": 0.41}, "gate_passed": False}
        run.started, run.finished = utcnow(), utcnow()
    body = admin.get(f"/api/v1/training-runs/{run_id}").json
    assert body["status"] == "done" and body["progress"] == 1.0 and body["version"] == "nucleus-ft-0badc0de"
    assert body["promoted"] is False and body["metrics"]["validation"]["dsb_score"] == 0.41
    assert body["started"] and body["finished"]


def test_a_broker_that_is_down_still_records_the_run(harness, admin, monkeypatch, caplog):
    monkeypatch.setenv("NUCLEUS_BROKER_URL", "redis://127.0.0.1:1/0")
    clear_shared_caches()  # the producer is cached per process: rebuild it from the new settings
    try:
        response = admin.post("/api/v1/training-runs", json={"epochs": 1})
        assert response.status_code == 202
        assert admin.get(f"/api/v1/training-runs/{response.json['id']}").json["status"] == "queued"
        assert f"could not enqueue training run {response.json['id']}" in caplog.text
    finally:
        monkeypatch.delenv("NUCLEUS_BROKER_URL")
        clear_shared_caches()


# --- models ------------------------------------------------------------------------------------

@pytest.fixture
def lineage(harness, request):
    """Three registered versions, root -> child -> grandchild, the child active; weights in the store."""
    prefix = f"nucleus-{request.node.name[-12:]}".replace("_", "-")
    versions = [f"{prefix}-{i}" for i in range(3)]
    now = utcnow()
    with harness.session() as session:
        for i, version in enumerate(versions):
            raw = f"weights of {version}".encode()
            harness.store.put(registry.object_key(version), raw)
            session.add(ModelVersion(version=version, parent=versions[i - 1] if i else None,
                                     object_key=registry.object_key(version), sha256=hashlib.sha256(raw).hexdigest(),
                                     training_summary={"user_images": i}, metrics={"validation": {"dsb_score": i / 10}},
                                     created=now + timedelta(seconds=i)))
        session.flush()
        registry.activate(session, versions[1])
    return versions


def listed_models(admin) -> dict[str, dict]:
    body = admin.get("/api/v1/models?per_page=1000").json
    assert body["total"] == len(body["models"]) and body["page"] == 1
    return {m["version"]: m for m in body["models"]}


def test_models_are_listed_with_their_lineage_and_one_active(admin, lineage):
    models = listed_models(admin)
    root, child, grandchild = (models[v] for v in lineage)
    assert set(child) >= {"version", "parent", "created", "training_summary", "metrics", "active"}
    assert child["parent"] == lineage[0] and grandchild["parent"] == lineage[1] and root["parent"] is None
    assert grandchild["training_summary"] == {"user_images": 2}
    assert grandchild["metrics"]["validation"]["dsb_score"] == 0.2
    assert [m["version"] for m in models.values() if m["active"]] == [lineage[1]]
    order = list(models)
    assert order.index(lineage[2]) < order.index(lineage[1]) < order.index(lineage[0])  # newest first


def test_activate_switches_and_rolls_back(harness, admin, lineage):
    promoted = admin.post(f"/api/v1/models/{lineage[2]}/activate")
    assert promoted.status_code == 200 and promoted.json["version"] == lineage[2] and promoted.json["active"] is True
    assert [v for v, m in listed_models(admin).items() if m["active"]] == [lineage[2]]
    rolled_back = admin.post(f"/api/v1/models/{lineage[0]}/activate")
    assert rolled_back.status_code == 200
    assert [v for v, m in listed_models(admin).items() if m["active"]] == [lineage[0]]
    with harness.session() as session:
        assert registry.active_version(session).version == lineage[0]


def test_activating_an_unknown_or_missing_version_changes_nothing(harness, admin, lineage):
    unknown = admin.post("/api/v1/models/nucleus-never-made/activate")
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "model_not_found"
    harness.store.delete(registry.object_key(lineage[2]))
    missing = admin.post(f"/api/v1/models/{lineage[2]}/activate")
    assert missing.status_code == 409 and missing.json["error"]["code"] == "model_weights_missing"
    assert [v for v, m in listed_models(admin).items() if m["active"]] == [lineage[1]]


# --- the shipped weights, named without torch ------------------------------------------------

def test_a_sidecar_names_weights_only_while_it_matches_them(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"some weights")
    assert weights_file.sidecar_version(weights) is None
    version = f"nucleus-x-{hashlib.sha256(b'some weights').hexdigest()[:8]}"
    weights_file.sidecar_path(weights).write_text(version + "\n")
    assert weights_file.sidecar_version(weights, weights.read_bytes()) == version
    weights.write_bytes(b"retrained weights")  # exported again, sidecar not rewritten: stale
    assert weights_file.sidecar_version(weights) == version
    assert weights_file.sidecar_version(weights, weights.read_bytes()) is None


def test_shipped_weights_with_a_sidecar_are_registered_without_torch(harness, admin, tmp_path, monkeypatch):
    weights = tmp_path / "nucleus-dsb2018.pt"
    weights.write_bytes(b"shipped weights stand-in")
    monkeypatch.setattr(registry, "shipped_weights_file", lambda: weights)
    before = listed_models(admin)  # no sidecar: nothing registered
    version = f"nucleus-dsb2018-{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}"
    assert version not in before
    weights_file.sidecar_path(weights).write_text(version + "\n")
    models = listed_models(admin)
    assert version in models and models[version]["parent"] is None and len(models) == len(before) + 1
    with harness.session() as session:
        assert harness.store.get(session.get(ModelVersion, version).object_key) == weights.read_bytes()
    assert len(listed_models(admin)) == len(models)  # registered once
    assert admin.post(f"/api/v1/models/{version}/activate").json["active"] is True


# --- the models page ---------------------------------------------------------------------------

def test_the_models_page_starts_runs_and_activates_versions(harness, admin, lineage):
    from testkit.api import sign_in

    client, csrf = sign_in(harness, role="admin")
    page = client.get("/models").data.decode()
    assert 'id="start-training"' in page and lineage[2] in page and "active" in page
    assert page.count('name="csrf_token"') >= 3  # sign-out, training form, activate buttons

    runs = harness.count(TrainingRun)
    assert client.post("/training-runs", data={"epochs": "2"}).status_code == 400  # no CSRF token
    started = client.post("/training-runs", data={"csrf_token": csrf, "epochs": "2", "force_promote": "on"})
    assert started.status_code == 303 and started.headers["Location"] == "/models"
    assert harness.count(TrainingRun) == runs + 1
    newest = admin.get("/api/v1/training-runs?per_page=1").json["training_runs"][0]
    assert newest["epochs"] == 2 and newest["force_promote"] is True
    page = client.get("/models").data.decode()
    assert "queued" in page and "data-reload-while-pending" in page
    client.post("/training-runs", data={"csrf_token": csrf, "epochs": "0"})
    assert "epochs must be" in client.get("/models").data.decode() and harness.count(TrainingRun) == runs + 1

    assert client.post(f"/models/{lineage[2]}/activate", data={"csrf_token": csrf}).status_code == 303
    assert [v for v, m in listed_models(admin).items() if m["active"]] == [lineage[2]]
    assert f"{lineage[2]} is now the active model of project default" in client.get("/models").data.decode()

    uploader, uploader_csrf = sign_in(harness, role="uploader")
    page = uploader.get("/models").data.decode()
    assert lineage[0] in page and 'id="start-training"' not in page and "Activate in" not in page
    assert uploader.post(f"/models/{lineage[0]}/activate", data={"csrf_token": uploader_csrf}).status_code == 403
    assert [v for v, m in listed_models(admin).items() if m["active"]] == [lineage[2]]
