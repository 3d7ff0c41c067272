"""Label uploads through the JSON API on the embedded default (SQLite migrated by Alembic, the local
object store, the file-system broker): real DSB2018 label images, mask zips, bad labels, scoping,
and the automatic training run after enough new labels."""
from __future__ import annotations

import io
import zipfile

import numpy as np
from sqlalchemy import select

from shared.infra.db.tables import JobStatus, Label, TrainingRun
from shared.domain.imaging.imageio import decode
from testkit.api import ApiHarness, nuclei_image, png_bytes, tiff_bytes


def post_labels(client, image_id: str, data: bytes, filename: str = "labels.png"):
    return client.post(f"/api/v1/images/{image_id}/labels", data={"file": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


def upload_image(client, experiment: str, data: bytes, filename: str = "image.png") -> str:
    response = client.upload(experiment, [(filename, data)])
    assert response.status_code == 202, response.json
    return response.json["images"][0]["id"]


def mask_zip(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for value in np.unique(labels[labels > 0]):
            archive.writestr(f"masks/nucleus-{value:04d}.png", png_bytes(((labels == value) * 255).astype(np.uint8)))
    return buffer.getvalue()


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label images describe the same nuclei, whatever their numbering."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    one_to_one = len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))
    return one_to_one and bool(((pairs[0] == 0) == (pairs[1] == 0)).all())


# --- access ------------------------------------------------------------------------------------

def test_label_routes_refuse_a_missing_token(harness):
    client = harness.app.test_client()
    for method, url in (("POST", "/api/v1/images/x/labels"), ("GET", "/api/v1/images/x/labels"),
                        ("GET", "/api/v1/experiments/x/labels"), ("GET", "/api/v1/labels/x/labels.png")):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.open(url, method=method, headers=headers)
            assert response.status_code == 401, (method, url)
            assert response.json["error"]["code"] == "unauthorized"


def test_a_viewer_may_not_upload_labels(harness, admin, experiment, dsb_samples):
    sample = dsb_samples[0]
    image_id = upload_image(admin, experiment, sample.path.read_bytes())
    response = post_labels(harness.client("viewer"), image_id, sample.labels_path.read_bytes())
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert admin.get(f"/api/v1/experiments/{experiment}/labels").json["total"] == 0


def test_labels_follow_the_image_project(harness):
    lab_a = harness.client("uploader", project="labels-lab-a")
    lab_b = harness.client("uploader", project="labels-lab-b")
    assert lab_a.post("/api/v1/experiments", json={"name": "labels-a-only"}).status_code == 201
    image_id = upload_image(lab_a, "labels-a-only", nuclei_image(11, size=32))
    labels = np.zeros((32, 32), np.uint16)
    labels[4:10, 4:10] = 1
    assert post_labels(lab_b, image_id, png_bytes(labels)).status_code == 404
    made = post_labels(lab_a, image_id, png_bytes(labels))
    assert made.status_code == 201
    assert lab_b.get(f"/api/v1/labels/{made.json['id']}/labels.png").status_code == 404
    assert lab_b.get("/api/v1/experiments/labels-a-only/labels").status_code == 404
    assert lab_a.get(f"/api/v1/labels/{made.json['id']}/labels.png").status_code == 200


# --- the happy paths ---------------------------------------------------------------------------

def test_a_dsb_label_image_is_stored_listed_and_downloadable(harness, admin, experiment, dsb_samples):
    sample = dsb_samples[1]
    image_id = upload_image(admin, experiment, sample.path.read_bytes(), "dsb.png")
    uploader = harness.client("uploader")
    response = post_labels(uploader, image_id, sample.labels_path.read_bytes())
    assert response.status_code == 201, response.json
    body = response.json
    assert body["image_id"] == image_id and body["count"] == sample.count and body["duplicate"] is False
    assert len(body["sha256"]) == 64

    with harness.session() as session:
        row = session.get(Label, body["id"])
        assert row.object_key == f"labels/{image_id}/{body['sha256']}.png" and row.count == sample.count
    stored = decode(harness.store.get(row.object_key))
    assert stored.dtype == np.uint16 and stored.shape == (sample.height, sample.width)
    assert same_partition(stored, decode(sample.labels_path.read_bytes()))
    assert sorted(np.unique(stored)) == list(range(sample.count + 1))  # renumbered 1..N

    download = admin.get(f"/api/v1/labels/{body['id']}/labels.png")
    assert download.status_code == 200 and download.mimetype == "image/png"
    assert download.data == harness.store.get(row.object_key)

    listed = admin.get(f"/api/v1/experiments/{experiment}/labels").json
    assert listed["total"] == 1 and listed["page"] == 1 and listed["per_page"] >= 1
    assert listed["labels"][0]["id"] == body["id"] and listed["labels"][0]["filename"] == "dsb.png"
    assert admin.get(f"/api/v1/images/{image_id}/labels").json["labels"][0]["count"] == sample.count


def test_the_same_labels_twice_are_one_row(harness, admin, experiment, dsb_samples):
    sample = dsb_samples[2]
    image_id = upload_image(admin, experiment, sample.path.read_bytes())
    first = post_labels(admin, image_id, sample.labels_path.read_bytes())
    again = post_labels(admin, image_id, sample.labels_path.read_bytes())
    as_zip = post_labels(admin, image_id, mask_zip(decode(sample.labels_path.read_bytes())), "masks.zip")
    assert first.status_code == 201
    assert again.status_code == 200 and again.json["id"] == first.json["id"] and again.json["duplicate"] is True
    # the same nuclei sent as a zip of masks normalise to the same stored image
    assert as_zip.status_code == 200 and as_zip.json["id"] == first.json["id"]
    with harness.session() as session:
        assert len(session.scalars(select(Label).where(Label.image_id == image_id)).all()) == 1


def test_a_zip_of_masks_becomes_a_label_image(harness, admin, experiment, dsb_samples):
    sample = dsb_samples[3]
    image_id = upload_image(admin, experiment, sample.path.read_bytes())
    truth = decode(sample.labels_path.read_bytes())
    response = post_labels(admin, image_id, mask_zip(truth), "masks.zip")
    assert response.status_code == 201 and response.json["count"] == sample.count
    stored = decode(admin.get(f"/api/v1/labels/{response.json['id']}/labels.png").data)
    assert same_partition(stored, truth)


def test_more_than_65535_nuclei_are_stored_as_a_32_bit_tiff(harness, admin, experiment):
    image_id = upload_image(admin, experiment, nuclei_image(21, size=300), "big.png")
    labels = np.arange(1, 300 * 300 + 1, dtype=np.uint32).reshape(300, 300)
    response = post_labels(admin, image_id, tiff_bytes(labels), "labels.tif")
    assert response.status_code == 201 and response.json["count"] == 90_000
    download = admin.get(f"/api/v1/labels/{response.json['id']}/labels.png")
    assert download.mimetype == "image/tiff"
    stored = decode(download.data)
    assert stored.dtype == np.uint32 and int(stored.max()) == 90_000


# --- bad labels --------------------------------------------------------------------------------

def test_bad_labels_get_a_clear_4xx(harness, admin, experiment, dsb_samples):
    sample = dsb_samples[0]
    image_id = upload_image(admin, experiment, sample.path.read_bytes())
    small = np.zeros((32, 32), np.uint16)
    small[2:8, 2:8] = 1
    good_zip = mask_zip(decode(sample.labels_path.read_bytes()))
    cases = {
        "wrong size": (png_bytes(small), "labels.png", "32x32"),
        "not an image": (b"this is a spreadsheet, honest\n" * 20, "labels.png", ""),
        "all background": (png_bytes(np.zeros((sample.height, sample.width), np.uint16)), "labels.png", "no nucleus"),
        "corrupt zip": (good_zip[: len(good_zip) // 2], "masks.zip", "zip"),
        "empty file": (b"", "labels.png", "empty"),
    }
    for case, (data, filename, needle) in cases.items():
        response = post_labels(admin, image_id, data, filename)
        assert 400 <= response.status_code < 500, (case, response.status_code)
        error = response.json["error"]
        assert error["code"] and error["message"], case
        assert needle in error["message"], (case, error["message"])
    no_file = admin.post(f"/api/v1/images/{image_id}/labels", data={}, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "file" in no_file.json["error"]["message"]
    assert admin.post("/api/v1/images/nope/labels", data={"file": (io.BytesIO(png_bytes(small)), "l.png")},
                      content_type="multipart/form-data").status_code == 404
    assert admin.get(f"/api/v1/experiments/{experiment}/labels").json["total"] == 0


# --- automatic training ------------------------------------------------------------------------

def test_enough_new_labels_start_one_training_run(harness, admin, experiment):
    from services.api import create_app

    auto = create_app(harness.settings.model_copy(update={"auto_train_after_labels": 2}))
    auto.config["TESTING"] = True
    token = harness.token("uploader")
    client = auto.test_client()
    headers = {"Authorization": f"Bearer {token}"}

    def label(seed: int):
        image_id = upload_image(admin, experiment, nuclei_image(100 + seed, size=32), f"auto-{seed}.png")
        labels = np.zeros((32, 32), np.uint16)
        labels[seed % 20: seed % 20 + 5, 3:9] = 1
        response = client.post(f"/api/v1/images/{image_id}/labels", headers=headers, content_type="multipart/form-data",
                               data={"file": (io.BytesIO(png_bytes(labels)), "l.png")})
        assert response.status_code == 201

    def runs() -> list[TrainingRun]:
        with harness.session() as session:
            return session.scalars(select(TrainingRun).order_by(TrainingRun.created)).all()

    with harness.session() as session:  # labels from other tests came before this run: they do not count
        session.add(TrainingRun(status=JobStatus.done))
    before = len(runs())
    label(1)
    assert len(runs()) == before
    label(2)
    assert len(runs()) == before + 1 and runs()[-1].status == JobStatus.queued
    label(3)
    label(4)
    assert len(runs()) == before + 1  # one is still queued: no second run
    with harness.session() as session:
        session.get(TrainingRun, runs()[-1].id).status = JobStatus.done
    label(5)  # labels 3, 4 and 5 came after the newest run was created
    assert len(runs()) == before + 2


# --- the image page ----------------------------------------------------------------------------

def test_the_image_page_takes_a_label_upload(harness, admin, experiment, dsb_samples):
    from testkit.api import sign_in

    sample = dsb_samples[0]
    image_id = upload_image(admin, experiment, sample.path.read_bytes())
    client, csrf = sign_in(harness, role="uploader")
    page = client.get(f"/images/{image_id}").data.decode()
    assert 'id="label-upload"' in page and 'name="csrf_token"' in page and "No labels for this image yet" in page

    forged = client.post(f"/images/{image_id}/labels", content_type="multipart/form-data",
                         data={"file": (io.BytesIO(sample.labels_path.read_bytes()), "l.png")})
    assert forged.status_code == 400
    bad = client.post(f"/images/{image_id}/labels", content_type="multipart/form-data",
                      data={"csrf_token": csrf, "file": (io.BytesIO(b"not an image at all"), "l.png")})
    assert bad.status_code == 303
    assert "The labels were not stored" in client.get(f"/images/{image_id}").data.decode()

    stored = client.post(f"/images/{image_id}/labels", content_type="multipart/form-data",
                         data={"csrf_token": csrf, "file": (io.BytesIO(sample.labels_path.read_bytes()), "l.png")})
    assert stored.status_code == 303 and stored.headers["Location"] == f"/images/{image_id}"
    page = client.get(f"/images/{image_id}").data.decode()
    assert f"Labels stored: {sample.count} nuclei" in page
    label_id = admin.get(f"/api/v1/images/{image_id}/labels").json["labels"][0]["id"]
    assert f"/labels/{label_id}/labels.png" in page
    assert client.get(f"/labels/{label_id}/labels.png").status_code == 200

    viewer, _ = sign_in(harness, role="viewer")
    assert 'id="label-upload"' not in viewer.get(f"/images/{image_id}").data.decode()


# --- the production backends ---------------------------------------------------------------------

def test_labels_and_automatic_runs_on_postgres_and_s3(tmp_path, pg_url, s3_bucket_env, use_settings):
    from minio import Minio

    settings = use_settings(tmp_path, database_url=pg_url, auto_train_after_labels=1, **s3_bucket_env)
    production = ApiHarness(settings)
    admin = production.client("admin")
    name = f"labels-pg-{tmp_path.name}"[:180]
    assert admin.post("/api/v1/experiments", json={"name": name}).status_code == 201
    image_id = upload_image(admin, name, nuclei_image(300, size=48))
    with production.session() as session:  # labels from other tests came before this run
        session.add(TrainingRun(status=JobStatus.done))
    runs = production.count(TrainingRun)
    labels = np.zeros((48, 48), np.uint16)
    labels[5:15, 5:15], labels[20:30, 20:34] = 7, 9
    made = post_labels(admin, image_id, png_bytes(labels))
    assert made.status_code == 201 and made.json["count"] == 2
    assert post_labels(admin, image_id, png_bytes(labels)).json["id"] == made.json["id"]
    assert production.count(TrainingRun) == runs + 1

    s3 = Minio(s3_bucket_env["NUCLEUS_S3_ENDPOINT"], access_key=s3_bucket_env["NUCLEUS_S3_ACCESS_KEY"],
               secret_key=s3_bucket_env["NUCLEUS_S3_SECRET_KEY"], secure=False)
    stored = s3.get_object(s3_bucket_env["NUCLEUS_S3_BUCKET"], f"labels/{image_id}/{made.json['sha256']}.png")
    assert set(np.unique(decode(stored.read()))) == {0, 1, 2}
    stored.close()
