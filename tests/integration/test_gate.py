"""The promotion gate, judged on the lab's own images: each project's held-out share is recorded once and
stays put as labels arrive; a run is promoted when it does not lose on those images (and does not collapse
on the base validation split); a run on scrambled labels is not; a run that could be evaluated on nothing
waits for an admin, who sees its numbers and can activate it; every decision is recorded with its numbers.
Runs are executed in this process by the trainer's code with a budget of two steps on 96-pixel crops."""
from __future__ import annotations

import numpy as np
import pytest

from services.trainer import held_out
from shared.infra.db.tables import HeldOutImage, ModelVersion
from testkit import lines
from testkit.api import nuclei_image
from testkit.api import sign_in


def places(project: str) -> dict[str, bool]:
    from shared.infra.auth import get_or_create_project
    from shared.infra.db.session import write_scope

    with write_scope() as session:
        return held_out.assign(session, get_or_create_project(session, project).id)


def test_the_held_out_share_is_recorded_and_stable(use_settings, tmp_path):
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.session import session_scope

    use_settings(tmp_path)
    upgrade()
    experiment = lines.experiment_in("lab")
    labels = np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20] = 1
    images = []

    def label_more(n: int) -> None:
        for _ in range(n):
            image_id, _job = lines.add_image(experiment, nuclei_image(len(images), size=64))
            lines.add_label(image_id, labels)
            images.append(image_id)

    label_more(2)
    assert places("lab") == {images[0]: False, images[1]: False}  # too few to hold any out
    label_more(3)
    first = places("lab")
    assert sum(first.values()) == 2 and [first[i] for i in images] == [False, False, True, False, True]
    lines.add_label(images[2], labels + (labels > 0))  # a newer label of a held-out image: it stays held out
    label_more(5)
    second = places("lab")
    assert {i: second[i] for i in first} == first  # nothing moves
    assert sum(second.values()) == 2  # 10 labelled: still two
    label_more(5)
    third = places("lab")
    assert sum(third.values()) == 3 and {i: third[i] for i in second} == second  # 15: a fifth
    with session_scope() as session:
        assert session.query(HeldOutImage).count() == 15
    assert places("other") == {}  # per project
    assert [held_out.target(n) for n in (0, 1, 2, 3, 4, 5, 9, 10, 13, 20)] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 4]


def labelled_project(project: str, samples, labels_of) -> list[str]:
    experiment = lines.experiment_in(project)
    image_ids = []
    for i, sample in enumerate(samples):
        image_id, _job = lines.add_image(experiment, sample.path.read_bytes(), sample.path.name)
        lines.add_label(image_id, labels_of(i, sample))
        image_ids.append(image_id)
    return image_ids


@pytest.fixture
def five_images():
    from testkit import data

    return data.pick("fluorescence", 256, 256, n=5)


def test_a_good_run_is_promoted_with_its_numbers(use_settings, tmp_path, five_images):
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.session import session_scope

    base = lines.small_base_set(tmp_path / "base")
    use_settings(tmp_path / "data", training_base_dir=str(base), **lines.TINY_TRAINING, training_lr=1e-5)
    upgrade()
    labelled_project("good", five_images, lambda i, s: lines.true_labels(s))
    parent = lines.shipped_version()
    run = lines.run_training("good")
    assert run["status"] == "done", run["error"]
    metrics = run["metrics"]
    assert metrics["decision"] == "promoted" and run["promoted"] is True, metrics
    assert metrics["parent_version"] == parent
    checks = {c["on"]: c for c in metrics["checks"]}
    assert set(checks) == {"held_out", "base_validation"}
    assert checks["held_out"]["images"] == 2 and checks["base_validation"]["images"] == 2
    assert checks["held_out"]["tolerance"] == 0.02 and checks["base_validation"]["tolerance"] == 0.10
    for check in checks.values():
        assert 0 <= check["after"] <= 1 and check["passed"] is True
        assert check["drop"] == pytest.approx(check["before"] - check["after"], abs=1e-3)
    assert metrics["held_out"]["before"]["dsb_score"] == pytest.approx(checks["held_out"]["before"], abs=1e-4)
    assert "held-out" in metrics["rule"]
    assert lines.active_in("good") == run["version"] and lines.active_in("default") == parent
    with session_scope() as session:
        row = session.get(ModelVersion, run["version"])
        assert row.parent == parent and row.metrics["decision"] == "promoted"
        assert row.training_summary["user_images"] == 3 and row.training_summary["user_held_out"] == 2


def test_a_run_on_scrambled_labels_is_not_promoted(use_settings, tmp_path, five_images):
    # Learning fast from user labels alone (no base set here), twenty steps on random discs unlearn nuclei;
    # the held-out images keep their true labels, as a lab's own corrections would.
    use_settings(tmp_path, **lines.no_base_set(tmp_path), **lines.TINY_TRAINING, training_lr=2e-3)
    from shared.infra.db.migrate import upgrade

    upgrade()
    labelled_project("scrambled", five_images, lambda i, s: lines.scrambled_labels(256, 256, seed=i))
    # the held-out images (third and fifth labelled) get their true labels back
    from shared.infra.auth import get_or_create_project
    from shared.infra.db.session import write_scope

    split = places("scrambled")
    held = [image_id for image_id, is_held in split.items() if is_held]
    order = list(split)
    for image_id in held:
        lines.add_label(image_id, lines.true_labels(five_images[order.index(image_id)]))
    parent = lines.shipped_version()
    run = lines.run_training("scrambled", epochs=10)
    assert run["status"] == "done", run["error"]
    metrics = run["metrics"]
    assert metrics["decision"] == "rejected" and run["promoted"] is False, metrics
    (check,) = metrics["checks"]
    assert check["on"] == "held_out" and check["passed"] is False and check["drop"] > check["tolerance"]
    assert metrics["base_validation"]["images"] == 0
    assert lines.active_in("scrambled") == parent
    with write_scope() as session:
        assert get_or_create_project(session, "scrambled").id == run["project_id"]


def test_a_run_evaluated_on_nothing_waits_for_an_admin(use_settings, tmp_path, five_images):
    from shared.infra.settings import get_settings
    from shared.infra.db.migrate import upgrade
    from testkit.api import ApiHarness

    use_settings(tmp_path, **lines.no_base_set(tmp_path), **lines.TINY_TRAINING)
    upgrade()
    labelled_project("tiny", five_images[:2], lambda i, s: lines.true_labels(s))  # two images: none held out
    parent = lines.shipped_version()
    run = lines.run_training("tiny")
    assert run["status"] == "done", run["error"]
    assert run["promoted"] is False and run["metrics"]["decision"] == "awaiting_admin", run["metrics"]
    assert run["metrics"]["checks"] == [] and run["metrics"]["gate_passed"] is None
    assert lines.active_in("tiny") == parent

    harness = ApiHarness(get_settings())
    admin = harness.client("admin")
    shown = admin.get(f"/api/v1/training-runs/{run['id']}").json
    assert shown["decision"] == "awaiting_admin" and shown["project"] == "tiny" and shown["promoted"] is False
    listed = {m["version"]: m for m in admin.get("/api/v1/models?project=tiny").json["models"]}
    assert listed[run["version"]]["active"] is False and listed[run["version"]]["project"] == "tiny"
    assert listed[run["version"]]["metrics"]["decision"] == "awaiting_admin"
    client, _csrf = sign_in(harness)  # the models page shows the run's decision and offers its activation
    html = client.get("/models").data.decode()
    assert 'data-decision="awaiting_admin"' in html and "Activate in tiny" in html
    activated = admin.post(f"/api/v1/models/{run['version']}/activate", json={"project": "tiny"})
    assert activated.status_code == 200 and activated.json["active"] is True
    assert lines.active_in("tiny") == run["version"] and lines.active_in("default") == parent

    forced = lines.run_training("tiny", force_promote=True)  # an admin's force_promote still works
    assert forced["promoted"] is True and forced["metrics"]["decision"] == "forced"
    assert lines.active_in("tiny") == forced["version"] and lines.active_in("default") == parent
