"""A label accepted through any route (the JSON API, the image page's upload, the editor's save) may
start a training run: with auto_train_after_labels=1 each new label starts one once the last is done."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from sqlalchemy import select

from services.api import create_app
from shared.infra.db.tables import JobStatus, TrainingRun
from testkit.api import nuclei_image, png_bytes
from testkit.api import sign_in


def test_every_label_route_starts_a_run_after_enough_labels(harness, admin, experiment):
    auto = create_app(harness.settings.model_copy(update={"auto_train_after_labels": 1}))
    auto.config["TESTING"] = True
    client, csrf = sign_in(SimpleNamespace(app=auto, token=harness.token), role="uploader")
    bearer = {"Authorization": f"Bearer {harness.token('uploader')}"}

    def labels_file(seed: int):
        labels = np.zeros((32, 32), np.uint16)
        labels[seed: seed + 6, 4:10] = 1
        return io.BytesIO(png_bytes(labels)), "labels.png"

    def new_image(seed: int) -> str:
        response = admin.upload(experiment, [(f"lab-{seed}.png", nuclei_image(200 + seed, size=32))])
        assert response.status_code == 202, response.get_json()
        return response.get_json()["images"][0]["id"]

    routes = {
        "api": lambda image_id, seed: client.post(f"/api/v1/images/{image_id}/labels", headers=bearer,
                                                  data={"file": labels_file(seed)}, content_type="multipart/form-data"),
        "page": lambda image_id, seed: client.post(f"/images/{image_id}/labels", content_type="multipart/form-data",
                                                   data={"csrf_token": csrf, "file": labels_file(seed)}),
        "editor": lambda image_id, seed: client.post(f"/images/{image_id}/editor/labels",
                                                     headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
                                                     data={"file": labels_file(seed)},
                                                     content_type="multipart/form-data"),
    }

    def open_runs() -> list[str]:
        with harness.session() as session:
            return session.scalars(select(TrainingRun.id).where(TrainingRun.status == JobStatus.queued)).all()

    with harness.session() as session:  # close whatever earlier tests left open
        for run in session.scalars(select(TrainingRun).where(TrainingRun.status == JobStatus.queued)):
            run.status = JobStatus.done
        session.commit()
    for seed, (route, post) in enumerate(routes.items(), start=1):
        response = post(new_image(seed), seed)
        assert response.status_code in (201, 303), (route, response.data[:300])
        started = open_runs()
        assert len(started) == 1, route
        with harness.session() as session:
            session.get(TrainingRun, started[0]).status = JobStatus.done
            session.commit()
