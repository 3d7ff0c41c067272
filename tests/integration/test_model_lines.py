"""A model line per project: a run trained and promoted in one project changes only that project's results;
a new project starts on the `default` project's version, and a change there never moves a project that
was already using another; the models list marks each project's active version; an admin activates any
version in a project (rollback). Jobs run through the worker's pipeline in this process (one model cache
serving several versions without a restart); the run executes with the trainer's code, tiny budget."""
from __future__ import annotations

import numpy as np
import pytest

from testkit import lines
from testkit.api import ApiHarness, nuclei_image
from testkit.api import sign_in


@pytest.fixture
def two_labs(use_settings, tmp_path, dsb_samples):
    """Projects `alpha` and `beta`, each with one segmented image; `alpha` with two labelled images."""
    from shared.infra.settings import get_settings
    from shared.infra.db.migrate import upgrade

    use_settings(tmp_path, **lines.no_base_set(tmp_path), **lines.TINY_TRAINING)
    upgrade()
    harness = ApiHarness(get_settings())
    labs = {}
    for project in ("alpha", "beta"):
        experiment = lines.experiment_in(project, f"{project}-plate")
        image_id, job_id = lines.add_image(experiment, dsb_samples[0].path.read_bytes(), "first.png")
        labs[project] = {"experiment": experiment, "first": lines.segment(job_id)}
    for sample in dsb_samples[1:3]:
        image_id, job_id = lines.add_image(labs["alpha"]["experiment"], sample.path.read_bytes(), sample.path.name)
        lines.segment(job_id)
        lines.add_label(image_id, lines.true_labels(sample))
    return harness, labs


def next_result(labs, project: str, seed: int) -> dict:
    _image, job_id = lines.add_image(labs[project]["experiment"], nuclei_image(seed, size=96), f"n{seed}.png")
    return lines.segment(job_id)


def listed(admin, project: str | None = None) -> dict[str, dict]:
    query = f"?per_page=1000&project={project}" if project else "?per_page=1000"
    response = admin.get("/api/v1/models" + query)
    assert response.status_code == 200, response.json
    return {m["version"]: m for m in response.json["models"]}


def active_listed(admin, project: str | None = None) -> list[str]:
    return [v for v, m in listed(admin, project).items() if m["active"]]


def test_a_promotion_in_one_project_changes_only_its_results(two_labs):
    from services.worker.model_cache import model_cache
    from shared.infra.db.tables import Result
    from shared.infra.db.session import session_scope

    harness, labs = two_labs
    shipped = lines.shipped_version()
    assert labs["alpha"]["first"]["model_version"] == labs["beta"]["first"]["model_version"] == shipped

    run = lines.run_training("alpha", force_promote=True)
    assert run["status"] == "done" and run["promoted"] is True, run
    trained = run["version"]
    assert lines.active_in("alpha") == trained
    assert lines.active_in("beta") == lines.active_in("default") == shipped

    assert next_result(labs, "alpha", 1)["model_version"] == trained  # no restart: the next job follows
    assert next_result(labs, "beta", 2)["model_version"] == shipped
    with session_scope() as session:
        assert session.query(Result).filter(Result.model_version == trained).count() == 1
        assert session.query(Result.model_version).filter(
            Result.image_id == labs["beta"]["first"]["image_id"]).all() == [(shipped,)]

    admin = harness.client("admin")
    assert active_listed(admin, "alpha") == [trained]
    assert active_listed(admin, "beta") == active_listed(admin) == [shipped]
    line = listed(admin, "alpha")[trained]
    assert line["project"] == "alpha" and line["parent"] == shipped and line["active_in"] == ["alpha"]
    assert line["metrics"]["decision"] == "forced" and line["training_summary"]["user_images"] == 2
    client, _ = sign_in(harness)  # the models page shows each project's line
    html = client.get("/models").data.decode()
    assert 'id="line-alpha"' in html and 'id="line-beta"' in html and trained in html

    # the default project moves to the trained version: beta, which was following it, stays where it was;
    # a project created afterwards starts on the default project's version
    assert admin.post(f"/api/v1/models/{trained}/activate", json={"project": "default"}).status_code == 200
    assert lines.active_in("default") == trained and lines.active_in("beta") == shipped
    assert next_result(labs, "beta", 3)["model_version"] == shipped
    lines.experiment_in("gamma")
    assert lines.active_in("gamma") == trained and active_listed(admin, "gamma") == [trained]

    # rollback in alpha only
    back = admin.post(f"/api/v1/models/{shipped}/activate", json={"project": "alpha"})
    assert back.status_code == 200 and back.json["active"] is True and "alpha" in back.json["active_in"]
    assert next_result(labs, "alpha", 4)["model_version"] == shipped
    assert lines.active_in("default") == trained
    assert len(model_cache().loaded) <= model_cache().capacity == 3


def test_activation_requests_are_checked(two_labs):
    harness, _labs = two_labs
    admin = harness.client("admin")
    shipped = lines.shipped_version()
    assert active_listed(admin, "alpha") == [shipped]
    missing = admin.post(f"/api/v1/models/{shipped}/activate", json={"project": "nowhere"})
    assert missing.status_code == 404 and missing.json["error"]["code"] == "project_not_found"
    assert admin.post(f"/api/v1/models/{shipped}/activate", json={"project": 7}).status_code == 400
    assert admin.post(f"/api/v1/models/{shipped}/activate", json=["alpha"]).status_code == 400
    assert admin.get("/api/v1/models?project=nowhere").status_code == 404
    assert harness.client("uploader").post(f"/api/v1/models/{shipped}/activate",
                                           json={"project": "alpha"}).status_code == 403
    beta_viewer = harness.client("viewer", project="beta")
    assert beta_viewer.get("/api/v1/models?project=alpha").status_code == 403
    assert beta_viewer.get("/api/v1/models").json["project"] == "beta"
    assert {p for m in beta_viewer.get("/api/v1/models").json["models"] for p in m["active_in"]} == {"beta"}
    # runs: a project token's runs go to its project; an unknown project is refused
    assert admin.post("/api/v1/training-runs", json={"project": "nowhere"}).status_code == 404
    created = admin.post("/api/v1/training-runs", json={"project": "beta"})
    assert created.status_code == 202
    assert admin.get(f"/api/v1/training-runs/{created.json['id']}").json["project"] == "beta"
    assert np.all([lines.active_in(p) == shipped for p in ("alpha", "beta", "default")])


def test_upgrading_a_database_in_use_keeps_every_project_on_its_version(tmp_path):
    """Migration 0003 on a SQLite database holding rows: every project gets the version that was active for the
    whole instance, results and their nuclei survive the table copies, and an image may then get a second job."""
    import sqlalchemy as sa

    from shared.infra.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("INSERT INTO projects (id, name, created) VALUES (1, 'default', CURRENT_TIMESTAMP), "
                          "(2, 'lab', CURRENT_TIMESTAMP)")
        c.exec_driver_sql("INSERT INTO model_versions (version, object_key, sha256, training_summary, metrics, active, "
                          "created) VALUES ('v-old', 'k', 's', '{}', '{}', 0, CURRENT_TIMESTAMP), "
                          "('v-active', 'k', 's', '{}', '{}', 1, CURRENT_TIMESTAMP)")
        c.exec_driver_sql("INSERT INTO experiments (id, name, project_id, created) VALUES (1, 'e', 2, CURRENT_TIMESTAMP)")
        c.exec_driver_sql("INSERT INTO images (id, experiment_id, sha256, object_key, filename, width, height, "
                          "size_bytes, extra, created) VALUES ('i1', 1, 's', 'k', 'f', 1, 1, 1, '{}', CURRENT_TIMESTAMP)")
        c.exec_driver_sql("INSERT INTO jobs (id, image_id, status, attempts, enqueued, interruptions, created) "
                          "VALUES ('j1', 'i1', 'done', 1, 1, 0, CURRENT_TIMESTAMP)")
        c.exec_driver_sql("INSERT INTO results (id, job_id, image_id, model_version, count, labels_key, overlay_key, "
                          "nuclei_csv_key, created) VALUES (1, 'j1', 'i1', 'v-active', 3, 'a', 'b', 'c', "
                          "CURRENT_TIMESTAMP)")
        c.exec_driver_sql("INSERT INTO nuclei (id, result_id, label, area, perimeter, centroid_x, centroid_y, "
                          "equivalent_diameter, eccentricity, solidity, mean_intensity, integrated_intensity) "
                          "VALUES (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)")
    upgrade(url)
    with engine.begin() as c:
        assert sorted(c.exec_driver_sql("SELECT project_id, version FROM project_models").all()) == [
            (1, "v-active"), (2, "v-active")]
        assert c.exec_driver_sql("SELECT count(*) FROM nuclei").scalar() == 1
        assert c.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        c.exec_driver_sql("INSERT INTO jobs (id, image_id, status, attempts, enqueued, interruptions, created, "
                          "model_version) VALUES ('j2', 'i1', 'queued', 0, 0, 0, CURRENT_TIMESTAMP, 'v-old')")
    engine.dispose()


def test_enough_new_labels_start_a_run_in_their_own_project(use_settings, tmp_path):
    from sqlalchemy import func

    from shared.infra.settings import get_settings
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.tables import Project, TrainingRun
    from shared.infra.db.session import session_scope
    from services.api.training_runs import start_run_if_enough_labels

    use_settings(tmp_path, auto_train_after_labels=2)
    upgrade()
    labels = np.zeros((64, 64), np.uint16)
    labels[5:15, 5:15] = 1
    experiments = {project: lines.experiment_in(project) for project in ("alpha", "beta")}

    def label(project: str, seed: int) -> None:
        image_id, _job = lines.add_image(experiments[project], nuclei_image(seed, size=64), f"{seed}.png")
        lines.add_label(image_id, labels)

    def runs() -> dict[str, int]:
        with session_scope() as session:
            names = dict(session.query(Project.id, Project.name).all())
            return {names[p]: n for p, n in session.query(TrainingRun.project_id, func.count()).group_by(
                TrainingRun.project_id).all()}

    label("alpha", 1)
    label("beta", 2)
    assert start_run_if_enough_labels(get_settings()) is None and runs() == {}  # one label in each: not enough
    label("beta", 3)
    assert start_run_if_enough_labels(get_settings()) is not None
    assert runs() == {"beta": 1}
    label("beta", 4)
    label("beta", 5)
    assert start_run_if_enough_labels(get_settings()) is None  # beta's run is still queued
    label("alpha", 6)
    assert start_run_if_enough_labels(get_settings()) is not None and runs() == {"alpha": 1, "beta": 1}


def test_a_project_token_sees_only_its_own_line(two_labs):
    harness, _labs = two_labs
    client, _ = sign_in_project(harness, "beta")
    html = client.get("/models").data.decode()
    assert 'id="line-beta"' in html and 'id="line-alpha"' not in html


def sign_in_project(harness, project: str):
    from testkit.api import csrf_from

    client = harness.app.test_client()
    client.post("/login", data={"token": harness.token("viewer", project),
                                "csrf_token": csrf_from(client.get("/login").data), "next": "/"})
    return client, csrf_from(client.get("/").data)
