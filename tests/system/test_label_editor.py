"""The label editor on the image page.

Through Flask's test client: the data the editor loads (the image as a PNG, the ids it starts from:
the newest label, else the result) and its save route, which goes through the labels API's acceptance.
In headless Chromium against `nucleus up`: the canvas and its hooks, a new nucleus painted with two
strokes, an erase stroke, a delete undone and a delete kept, saved; the stored label is then read back
through the API and checked pixel by pixel."""
from __future__ import annotations

import gzip
import io
import re

import numpy as np
import pytest

from shared.domain.imaging.imageio import decode
from testkit.api import csrf_from, nuclei_image, png_bytes, tiff_bytes
from testkit.browser import wait

WIDTH, HEIGHT = 96, 64  # not square: the canvas must keep the aspect ratio


# --- through the test client ----------------------------------------------------------------------

def signed_in(harness, role="admin"):
    client = harness.app.test_client()
    client.post("/login", data={"token": harness.token(role), "csrf_token": csrf_from(client.get("/login").data)})
    return client, csrf_from(client.get("/").data)


def upload(admin, experiment: str, data: bytes) -> dict:
    response = admin.upload(experiment, [("cells.png", data)])
    assert response.status_code == 202, response.json
    return response.json["images"][0]


def ids_of(response, width: int, height: int) -> np.ndarray:
    assert response.status_code == 200, response.data[:300]
    data = response.data
    if response.headers.get("Content-Encoding") == "gzip":
        data = gzip.decompress(data)
    return np.frombuffer(data, dtype="<u4").reshape(height, width)


def post_edit(client, image_id: str, data: bytes, csrf: str | None):
    headers = {"Accept": "application/json", **({"X-CSRF-Token": csrf} if csrf else {})}
    return client.post(f"/images/{image_id}/editor/labels", headers=headers,
                       data={"file": (io.BytesIO(data), "edited-labels.png")}, content_type="multipart/form-data")


def test_editor_loads_the_image_and_starts_from_the_result_then_the_newest_label(harness, admin, experiment):
    row = upload(admin, experiment, nuclei_image(21, size=32))
    client, _csrf = signed_in(harness)
    page = client.get(f"/images/{row['id']}")
    assert b"data-reload-while-pending" in page.data and b'id="label-editor"' not in page.data

    harness.finish(row["job_id"], count=3)
    page = client.get(f"/images/{row['id']}").data.decode()
    assert 'id="label-editor"' in page
    for tool in ("new", "paint", "erase", "delete", "save"):
        assert f'data-tool="{tool}"' in page
    assert not re.search(r"<script>|<script\s+(?![^>]*\bsrc=)|\son[a-z]+=", page), "inline script or on* handler"
    canvas = re.search(r'<canvas id="label-editor" width="(\d+)" height="(\d+)"', page)
    assert int(canvas[1]) == int(canvas[2])  # a square image, a square box

    picture = client.get(f"/images/{row['id']}/editor/image.png")
    assert picture.status_code == 200 and picture.mimetype == "image/png"
    assert decode(picture.data).shape[:2] == (32, 32) and decode(picture.data).dtype == np.uint8

    result = decode(harness.store.get(f"results/{row['job_id']}/labels.tif"))
    response = client.get(f"/images/{row['id']}/editor/labels.u32", headers={"Accept-Encoding": "gzip"})
    assert response.headers["X-Label-Source"] == "result"
    assert (ids_of(response, 32, 32) == result).all()

    mine = np.zeros((32, 32), np.uint16)
    mine[5:12, 5:12] = 1
    mine[20:30, 3:9] = 2
    stored = admin.post(f"/api/v1/images/{row['id']}/labels", data={"file": (io.BytesIO(png_bytes(mine)), "l.png")},
                        content_type="multipart/form-data")
    assert stored.status_code == 201
    response = client.get(f"/images/{row['id']}/editor/labels.u32")  # no gzip asked for: raw
    assert response.headers["X-Label-Source"] == f"label {stored.json['id']}"
    assert "Content-Encoding" not in response.headers
    assert (ids_of(response, 32, 32) == mine).all()


@pytest.mark.parametrize("dtype, top", [(np.uint16, 4000), (np.uint8, 255), (np.float32, 1.0)])
def test_editor_image_is_stretched_as_the_overlay(harness, admin, experiment, dtype, top):
    from shared.domain.model.preprocess import normalize

    rng = np.random.default_rng(3)
    pixels = (rng.random((30, 40)) * top * 0.3).astype(dtype)
    pixels[5:15, 10:30] = top
    row = upload(admin, experiment, tiff_bytes(pixels))
    client, _csrf = signed_in(harness)
    shown = decode(client.get(f"/images/{row['id']}/editor/image.png").data)
    expected = (np.clip(normalize(pixels).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)[..., 0]
    assert shown.shape == (30, 40) and (shown == expected).all()


def test_editor_save_goes_through_label_acceptance(harness, admin, experiment):
    row = upload(admin, experiment, nuclei_image(22, size=32))
    client, csrf = signed_in(harness, "uploader")
    labels = np.zeros((32, 32), np.uint16)
    labels[4:10, 4:10] = 7

    refused = post_edit(client, row["id"], png_bytes(labels), csrf=None)
    assert refused.status_code == 400 and refused.json["error"]["code"] == "csrf_failed"
    wrong_size = post_edit(client, row["id"], png_bytes(labels[:16]), csrf)
    assert wrong_size.status_code == 400 and wrong_size.json["error"]["code"] == "bad_labels"
    assert "16" in wrong_size.json["error"]["message"]
    empty = post_edit(client, row["id"], png_bytes(np.zeros((32, 32), np.uint16)), csrf)
    assert empty.status_code == 400 and "no nucleus" in empty.json["error"]["message"]
    viewer, viewer_csrf = signed_in(harness, "viewer")
    assert post_edit(viewer, row["id"], png_bytes(labels), viewer_csrf).status_code == 403
    assert admin.get(f"/api/v1/images/{row['id']}/labels").json["labels"] == []  # nothing stored so far

    saved = post_edit(client, row["id"], png_bytes(labels), csrf)
    assert saved.status_code == 201 and saved.json["count"] == 1 and saved.json["duplicate"] is False
    listed = admin.get(f"/api/v1/images/{row['id']}/labels").json["labels"]
    assert [label["id"] for label in listed] == [saved.json["id"]]
    again = post_edit(client, row["id"], png_bytes(labels), csrf)
    assert again.status_code == 200 and again.json["duplicate"] is True


def test_editor_saves_share_the_label_upload_budget(harness, experiment):
    from services.api import create_app

    app = create_app(harness.settings.model_copy(update={"label_upload_rate": "2/minute"}))
    token = harness.token("uploader")
    client = app.test_client()
    client.post("/login", data={"token": token, "csrf_token": csrf_from(client.get("/login").data)})
    csrf = csrf_from(client.get("/").data)
    api = client.post("/api/v1/images/no-such-image/labels", headers={"Authorization": f"Bearer {token}"},
                      data={"file": (io.BytesIO(png_bytes(np.ones((4, 4), np.uint16))), "l.png")},
                      content_type="multipart/form-data")
    assert api.status_code == 404
    assert post_edit(client, "no-such-image", png_bytes(np.ones((4, 4), np.uint16)), csrf).status_code == 404
    refused = post_edit(client, "no-such-image", png_bytes(np.ones((4, 4), np.uint16)), csrf)
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


# --- in a browser -----------------------------------------------------------------------------------

def start_labels() -> np.ndarray:
    """Three nuclei: a disc (1) to erase a band through, a square (2) to delete, a box (3) deleted then restored."""
    labels = np.zeros((HEIGHT, WIDTH), np.uint16)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    labels[(xx - 20) ** 2 + (yy - 20) ** 2 <= 64] = 1
    labels[10:26, 60:76] = 2
    labels[40:56, 60:81] = 3
    return labels


def distance_to_segments(segments) -> np.ndarray:
    """Each pixel's distance (between pixel corners, as the editor's integer brush centres) to the nearest segment."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH].astype(float)
    nearest = np.full((HEIGHT, WIDTH), np.inf)
    for (x0, y0), (x1, y1) in segments:
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        nearest = np.minimum(nearest, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)))
    return nearest


def view(driver, canvas) -> tuple[float, float, float]:
    """(canvas pixels per image pixel, image x and y at the canvas' top left) as the editor last drew it."""
    return tuple(float(canvas.get_attribute(f"data-{name}")) for name in ("scale", "view-x", "view-y"))


def canvas_pixels(driver, canvas) -> float:
    """Canvas pixels per CSS pixel."""
    return driver.execute_script("return arguments[0].width / arguments[0].getBoundingClientRect().width", canvas)


def test_paint_erase_delete_undo_and_save_in_a_browser(browser, embedded_stack, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from testkit.http import Client

    api = Client(embedded_stack.url, embedded_stack.token)
    assert api.create_experiment("editor-plate").status_code == 201
    rng = np.random.default_rng(5)
    picture = rng.integers(0, 30, (HEIGHT, WIDTH), dtype=np.uint8)
    picture[start_labels() > 0] = 200
    uploaded = api.upload("editor-plate", [("cells.png", png_bytes(picture))])
    assert uploaded.status_code == 202, uploaded.text
    image_id = uploaded.json()["images"][0]["id"]
    original = start_labels()
    first = api.post(f"/api/v1/images/{image_id}/labels", files={"file": ("l.png", png_bytes(original), "image/png")})
    assert first.status_code == 201, first.text

    browser.get(f"{embedded_stack.url}/login")
    browser.find_element(By.NAME, "token").send_keys(embedded_stack.token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(browser, lambda d: "/login" not in d.current_url, message="signed in")
    browser.get(f"{embedded_stack.url}/images/{image_id}")
    editor = browser.find_element(By.ID, "editor")
    wait(browser, lambda d: editor.get_attribute("data-state") in ("ready", "error"), message="the editor loaded")
    assert editor.get_attribute("data-state") == "ready", browser.find_element(By.ID, "editor-status").text
    assert editor.get_attribute("data-source") == f"label {first.json()['id']}"

    canvas = browser.find_element(By.ID, "label-editor")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    box = browser.execute_script("var r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", canvas)
    assert abs(box[0] / box[1] - WIDTH / HEIGHT) < 0.02, box
    scale = box[0] / WIDTH  # CSS pixels per image pixel: the whole image at one scale
    assert abs(box[1] / HEIGHT - scale) < 0.02 * scale
    assert view(browser, canvas) == (pytest.approx(scale * canvas_pixels(browser, canvas)), 0, 0)

    def at(x: float, y: float) -> tuple[int, int]:
        """The offset from the canvas centre of image point (x, y): the centre of pixel (x, y) for integers."""
        return round((x + 0.5) * scale - box[0] / 2), round((y + 0.5) * scale - box[1] / 2)

    def drag(*points):
        actions = ActionChains(browser, duration=50).move_to_element_with_offset(canvas, *at(*points[0])).click_and_hold()
        for point in points[1:]:
            actions = actions.move_to_element_with_offset(canvas, *at(*point))
        actions.release().perform()

    def click(x, y):
        ActionChains(browser, duration=50).move_to_element_with_offset(canvas, *at(x, y)).click().perform()

    def tool(name):
        browser.find_element(By.CSS_SELECTOR, f'#editor button[data-tool="{name}"]').click()

    def brush(radius):
        browser.execute_script("var b = document.getElementById('editor-brush'); b.value = arguments[0];"
                               "b.dispatchEvent(new Event('input'))", radius)

    paint_radius, erase_radius = 4, 2
    paint_strokes = [((10, 44), (40, 44)), ((40, 44), (40, 58))]  # one nucleus, an L drawn in two drags
    erase_strokes = [((10, 20), (30, 20))]
    brush(paint_radius)
    tool("new")
    tool("paint")
    drag((10, 44), (25, 44), (40, 44))
    drag((40, 44), (40, 58))
    brush(erase_radius)
    tool("erase")
    drag((10, 20), (30, 20))
    tool("delete")
    click(70, 47)  # nucleus 3
    browser.find_element(By.CSS_SELECTOR, '#editor button[data-action="undo"]').click()  # ...and back
    click(67, 17)  # nucleus 2, kept deleted

    # zoomed in, a one-pixel-radius dot lands exactly on the image pixel under the pointer
    for _ in range(2):
        browser.find_element(By.CSS_SELECTOR, '#editor button[data-action="zoom-in"]').click()
    fit = scale * canvas_pixels(browser, canvas)
    wait(browser, lambda d: view(d, canvas)[0] == pytest.approx(fit * 1.5 ** 2), message="zoomed in twice")
    zoom, view_x, view_y = view(browser, canvas)
    assert view_x > 0 and view_y > 0  # zoomed about the centre
    css = 1 / canvas_pixels(browser, canvas)
    dot = (50, 30)
    brush(1)
    tool("new")
    ActionChains(browser, duration=50).move_to_element_with_offset(
        canvas, round((dot[0] + 0.5 - view_x) * zoom * css - box[0] / 2),
        round((dot[1] + 0.5 - view_y) * zoom * css - box[1] / 2)).click().perform()
    browser.find_element(By.CSS_SELECTOR, '#editor button[data-action="fit"]').click()
    wait(browser, lambda d: view(d, canvas) == (pytest.approx(fit), 0, 0), message="the whole image again")

    # with "keep other nuclei" a stroke into box 3 paints only the background beside it
    spared_stroke = ((88, 48), (72, 48))
    browser.find_element(By.ID, "editor-keep-others").click()
    brush(2)
    tool("new")
    drag(*spared_stroke)
    browser.save_screenshot(str(tmp_path / "editor.png"))
    tool("save")
    wait(browser, lambda d: editor.get_attribute("data-state") in ("saved", "error"), message="saved")
    assert editor.get_attribute("data-state") == "saved", browser.find_element(By.ID, "editor-status").text

    listed = api.get(f"/api/v1/images/{image_id}/labels").json()["labels"]
    assert len(listed) == 2 and listed[0]["id"] == editor.get_attribute("data-saved-label")
    stored = decode(api.get(listed[0]["links"]["labels"]).content).astype(np.int64)
    assert stored.shape == (HEIGHT, WIDTH)

    painted, erased = distance_to_segments(paint_strokes), distance_to_segments(erase_strokes)
    expected = original.astype(np.int64)
    expected[expected == 2] = 0
    expected[painted <= paint_radius - 1.5] = 4
    expected[erased <= erase_radius - 1.5] = 0
    expected[[30, 29, 30, 30, 31], [50, 50, 49, 51, 50]] = 5  # the dot, pixel by pixel
    spared = distance_to_segments([spared_stroke])
    expected[(spared <= 2 - 1.5) & (original == 0)] = 6
    unsure = ((painted > paint_radius - 1.5) & (painted <= paint_radius + 1.5)) | \
             ((erased > erase_radius - 1.5) & (erased <= erase_radius + 1.5) & (original > 0)) | \
             ((spared > 2 - 1.5) & (spared <= 2 + 1.5) & (original == 0))
    sure = ~unsure
    # the save renumbers ids 1..N; the nuclei must correspond one to one on every sure pixel
    pairs = {(int(e), int(s)) for e, s in zip(expected[sure], stored[sure])}
    assert len(pairs) == 6 and (0, 0) in pairs, sorted(pairs)  # background, the disc's rest, box 3, three new nuclei
    assert len(pairs) == len({e for e, _ in pairs}) == len({s for _, s in pairs})
    assert (stored[sure] == np.vectorize(dict(pairs).get)(expected[sure])).all()
    new_id, disc_id = dict(pairs)[4], dict(pairs)[1]
    assert (painted[stored == new_id] <= paint_radius + 1.5).all()  # the new nucleus is the strokes only
    assert set(np.unique(stored[unsure & (painted <= paint_radius + 1.5)])) <= {0, new_id}
    assert set(np.unique(stored[unsure & (erased <= erase_radius + 1.5)])) <= {0, disc_id}
    assert (stored[original == 2] == 0).all()  # the deleted nucleus is gone
    assert (stored[original == 3] == dict(pairs)[3]).all()  # box 3: restored by undo, spared by the last stroke
    assert listed[0]["count"] == 5
