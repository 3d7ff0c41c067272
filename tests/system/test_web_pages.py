"""The web pages through Flask's test client: sign-in with a token, CSRF on every form, the
experiment page with uploads, the image page, plots and downloads behind the session."""
from __future__ import annotations

import io


from shared.infra.db.tables import Image
from testkit.api import csrf_from, nuclei_image, sign_in


def test_pages_need_a_session(harness):
    client = harness.app.test_client()
    for path in ("/", "/experiments/anything", "/images/x", "/images/x/overlay.png"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), path
    assert client.get("/login").status_code == 200


def test_login_refuses_a_wrong_token(harness):
    client = harness.app.test_client()
    csrf = csrf_from(client.get("/login").data)
    response = client.post("/login", data={"token": "nuc_wrong", "csrf_token": csrf})
    assert response.status_code == 401 and b"unknown or revoked" in response.data
    assert client.get("/").status_code == 302


def test_posts_without_the_csrf_token_are_refused(harness):
    anonymous = harness.app.test_client()
    assert anonymous.post("/login", data={"token": harness.token("admin")}).status_code == 400
    client, csrf = sign_in(harness)
    forms = {"/experiments": lambda: {"name": "no-csrf"}, "/logout": dict,
             "/experiments/x/upload": lambda: {"file": (io.BytesIO(nuclei_image(1)), "a.png")}}
    for path, form in forms.items():
        response = client.post(path, data=form(), content_type="multipart/form-data")
        assert response.status_code == 400, path
        response = client.post(path, data={**form(), "csrf_token": "forged"}, content_type="multipart/form-data")
        assert response.status_code == 400, path
    assert harness.client("admin").get("/api/v1/experiments/no-csrf").status_code == 404


def test_sign_in_create_upload_and_see_the_result(harness):
    client, csrf = sign_in(harness)
    made = client.post("/experiments", data={"name": "web-plate", "csrf_token": csrf})
    assert made.status_code == 303 and made.headers["Location"] == "/experiments/web-plate"
    page = client.get("/experiments/web-plate")
    assert page.status_code == 200 and b'enctype="multipart/form-data"' in page.data and b"multiple" in page.data

    uploaded = client.post("/experiments/web-plate/upload", content_type="multipart/form-data", data={
        "csrf_token": csrf, "condition": "control", "well": "B03",
        "file": [(io.BytesIO(nuclei_image(2)), "first.png"), (io.BytesIO(nuclei_image(3)), "second.png")]})
    assert uploaded.status_code == 303
    page = client.get("/experiments/web-plate").data.decode()
    assert "2 image(s) queued" in page and "first.png" in page and "second.png" in page
    assert 'data-pending="yes"' in page  # the table keeps refreshing itself while jobs wait

    rows = harness.client("admin").get("/api/v1/experiments/web-plate/results").json["results"]
    assert {r["condition"] for r in rows} == {"control"} and {r["well"] for r in rows} == {"B03"}
    harness.finish(rows[0]["job_id"], count=3, model_version="nucleus-web-1")
    harness.finish(rows[1]["job_id"], count=5, model_version="nucleus-web-1")

    fragment = client.get("/experiments/web-plate/rows").data.decode()
    assert 'data-pending="no"' in fragment and "nucleus-web-1" in fragment
    assert f"/images/{rows[0]['image_id']}/overlay.png" in fragment

    image_page = client.get(f"/images/{rows[0]['image_id']}").data.decode()
    assert 'id="count">3<' in image_page and f"/images/{rows[0]['image_id']}/area.png" in image_page
    assert image_page.count("<tr><td>") == 3  # the nuclei table
    for path, mimetype in ((f"/images/{rows[0]['image_id']}/overlay.png", "image/png"),
                           (f"/images/{rows[0]['image_id']}/labels.tif", "image/tiff"),
                           (f"/images/{rows[0]['image_id']}/nuclei.csv", "text/csv"),
                           (f"/images/{rows[0]['image_id']}/area.png", "image/png"),
                           ("/experiments/web-plate/plots/counts.png", "image/png"),
                           ("/experiments/web-plate/plots/areas.png", "image/png"),
                           ("/experiments/web-plate/plots/plate.png", "image/png"),
                           ("/experiments/web-plate/results.csv", "text/csv"),
                           ("/experiments/web-plate/nuclei.csv", "text/csv")):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == mimetype, path
    assert client.get("/experiments/web-plate/nuclei.csv").data.decode().count("\n") == 1 + 3 + 5


def test_odd_query_strings_never_break_a_page(harness):
    client, csrf = sign_in(harness)
    client.post("/experiments", data={"name": "web-odd", "csrf_token": csrf})
    for query in ("name=other&page=1", "status=bogus", "page=-1", "per_page=5000", "condition=%00&well=%FF"):
        response = client.get(f"/experiments/web-odd?{query}")
        assert response.status_code in (200, 400), (query, response.status_code)


def test_a_bad_file_in_the_web_form_is_explained_and_stores_nothing(harness):
    client, csrf = sign_in(harness)
    client.post("/experiments", data={"name": "web-bad", "csrf_token": csrf})
    images = harness.count(Image)
    response = client.post("/experiments/web-bad/upload", content_type="multipart/form-data", data={
        "csrf_token": csrf, "file": [(io.BytesIO(nuclei_image(4)), "fine.png"), (io.BytesIO(b"text"), "notes.txt")]})
    assert response.status_code == 303
    assert "Nothing was uploaded. notes.txt: not an image" in client.get("/experiments/web-bad").data.decode()
    assert harness.count(Image) == images


def test_a_viewer_sees_pages_but_cannot_upload(harness):
    admin, csrf = sign_in(harness)
    admin.post("/experiments", data={"name": "web-view", "csrf_token": csrf})
    viewer, viewer_csrf = sign_in(harness, "viewer")
    page = viewer.get("/experiments/web-view")
    assert page.status_code == 200 and b'id="upload"' not in page.data
    response = viewer.post("/experiments/web-view/upload", content_type="multipart/form-data",
                           data={"csrf_token": viewer_csrf, "file": [(io.BytesIO(nuclei_image(5)), "a.png")]})
    assert response.status_code == 403
    assert viewer.post("/experiments", data={"name": "viewer-web", "csrf_token": viewer_csrf}).status_code == 403


def test_pages_keep_projects_apart(harness):
    lab_a, csrf = sign_in(harness, "uploader", project="web-lab-a")
    assert lab_a.post("/experiments", data={"name": "web-a-only", "csrf_token": csrf}).status_code == 303
    lab_b, _ = sign_in(harness, "uploader", project="web-lab-b")
    assert b"web-a-only" not in lab_b.get("/").data
    assert lab_b.get("/experiments/web-a-only").status_code == 404
    assert b"web-a-only" in lab_a.get("/").data


def test_logout_and_revocation_end_the_session(harness):
    from shared.infra.auth import revoke_token, verify_token

    client, csrf = sign_in(harness)
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/").status_code == 302

    client = harness.app.test_client()
    token = harness.token("viewer")
    client.post("/login", data={"token": token, "csrf_token": csrf_from(client.get("/login").data)})
    assert client.get("/").status_code == 200
    with harness.session() as session:
        revoke_token(session, verify_token(session, token).id)
    assert client.get("/").status_code == 302


def test_sign_in_never_redirects_off_site(harness):
    client = harness.app.test_client()
    csrf = csrf_from(client.get("/login?next=https://evil.example/").data)
    response = client.post("/login", data={"token": harness.token("viewer"), "csrf_token": csrf,
                                           "next": "https://evil.example/"})
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_the_session_key_is_kept_in_the_data_dir(harness):
    from services.api import create_app

    key_file = harness.settings.data_dir / "secret_key"
    assert key_file.is_file() and len(key_file.read_text().strip()) >= 32
    client, _ = sign_in(harness)
    restarted = create_app(harness.settings)  # a restarted API keeps signed-in people signed in
    cookie = client.get_cookie("session")
    other = restarted.test_client()
    other.set_cookie("session", cookie.value)
    assert other.get("/").status_code == 200
