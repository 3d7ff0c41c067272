"""The same bytes uploaded again into an experiment answer with the existing image and its newest job
(a re-segmentation adds jobs), and an upload's SHA-256 and size limit hold for the bytes read."""
from __future__ import annotations

import hashlib
from datetime import timedelta

from services.api import create_app
from shared.infra.db.tables import Job, JobStatus
from testkit.api import TokenClient, nuclei_image


def test_a_duplicate_answers_with_the_images_newest_job(harness, admin, experiment):
    content = nuclei_image(seed=11)
    first = admin.upload(experiment, [("a.png", content)])
    assert first.status_code == 202, first.get_json()
    original = first.get_json()["images"][0]
    assert original["sha256"] == hashlib.sha256(content).hexdigest()

    with harness.session() as session:  # two later jobs, as re-segmentations add them, the later one last
        created = session.get(Job, original["job_id"]).created
        later = [Job(image_id=original["id"], status=JobStatus.queued, model_version="v2",
                     created=created + timedelta(seconds=s)) for s in (5, 10)]
        session.add_all(later)
        session.commit()
        newest = later[-1].id

    again = admin.upload(experiment, [("renamed.png", content)])
    assert again.status_code == 200, again.get_json()
    row = again.get_json()["images"][0]
    assert row["duplicate"] is True
    assert (row["id"], row["job_id"], row["status"]) == (original["id"], newest, "queued")
    assert admin.upload(experiment, [("a.png", content)]).get_json()["images"][0]["job_id"] == newest


def test_an_upload_one_byte_over_the_limit_is_refused(harness, experiment):
    content = nuclei_image(seed=12)
    limited = create_app(harness.settings.model_copy(update={"max_upload_bytes": len(content) - 1}))
    client = TokenClient(limited.test_client(), harness.token("admin"))
    response = client.upload(experiment, [("a.png", content)])
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "file_too_large"
    exact = create_app(harness.settings.model_copy(update={"max_upload_bytes": len(content)}))
    response = TokenClient(exact.test_client(), harness.token("admin")).upload(experiment, [("a.png", content)])
    assert response.status_code == 202, response.get_json()
