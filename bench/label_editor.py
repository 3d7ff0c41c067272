#!/usr/bin/env python3
"""The image page's label editor on large images, in headless Chromium: how long until it is ready,
how much the starting labels weigh on the wire, and how long a delete, a paint stroke and a save take.

    .venv/bin/python bench/label_editor.py [--sizes 512,2048,4096] [--spacing 20]

For each size N it serves the API in this process (embedded settings on a temporary data directory:
SQLite, local objects, the file-system broker, no worker, so nothing else competes for the CPU),
uploads an N x N grey image and a label of discs (radius 6, one every `spacing` pixels), opens
/images/<id> in Debian's chromium and times, from Selenium's side:
- ready s: the page's GET until the editor's data-state is `ready` (image PNG, ids, colour buffer);
- ids KiB: the starting ids as sent (gzip), and raw (4 bytes a pixel);
- delete s: a click on a nucleus until the status line reports it (a scan of every pixel);
- stroke s: a 20-point drag across the image with a radius-10 brush;
- save s: the save button until data-state is `saved` (16-bit PNG written in the page, deflated by the
  browser, uploaded, parsed and stored by the labels API's acceptance).
"""
from __future__ import annotations

import argparse
import io
import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def label_grid(size: int, spacing: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    near_y, near_x = (yy // spacing) * spacing + spacing // 2, (xx // spacing) * spacing + spacing // 2
    inside = (yy - near_y) ** 2 + (xx - near_x) ** 2 <= 36
    ids = (yy // spacing) * (size // spacing + 1) + xx // spacing + 1
    labels = np.where(inside, ids, 0)
    _, inverse = np.unique(labels, return_inverse=True)  # 1..N, background 0
    return inverse.reshape(labels.shape).astype(np.uint16 if inverse.max() <= 65535 else np.uint32)


def encoded(array: np.ndarray) -> bytes:
    if array.dtype == np.uint32:
        import tifffile

        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, compression="zlib")
        return buffer.getvalue()
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def serve(data_dir: Path):
    import pytest
    from werkzeug.serving import make_server

    from services.api import create_app
    from shared.infra.auth import create_token
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.session import session_scope
    from testkit.env import apply_settings
    from testkit.net import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    settings = apply_settings(pytest.MonkeyPatch(), data_dir, label_upload_rate="", upload_rate_per_minute=0)
    upgrade(settings.resolved_database_url)
    app = create_app(settings)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with session_scope(settings.resolved_database_url) as session:
        token = create_token(session, "bench", "admin", None)
    return server, f"http://127.0.0.1:{port}", token


def browser(profile: Path):
    from testkit.browser import start_chromium

    driver = start_chromium(profile)
    driver.set_page_load_timeout(300)  # a 4096x4096 label image loads for minutes on a loaded machine
    return driver


def until(driver, condition, timeout=600.0) -> float:
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.perf_counter()
    WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition)
    return time.perf_counter() - start


def measure(driver, base: str, token: str, size: int, spacing: int) -> dict:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from testkit.http import Client

    api = Client(base, token, timeout=600)
    name = f"editor-{size}-{time.time_ns()}"
    assert api.create_experiment(name).status_code == 201
    rng = np.random.default_rng(size)
    labels = label_grid(size, spacing)
    picture = rng.integers(0, 40, (size, size), dtype=np.uint8)
    picture[labels > 0] = 180
    uploaded = api.upload(name, [("big.png", encoded(picture))])
    assert uploaded.status_code == 202, uploaded.text
    image_id = uploaded.json()["images"][0]["id"]
    stored = api.post(f"/api/v1/images/{image_id}/labels", files={"file": ("l.png", encoded(labels))})
    assert stored.status_code == 201, stored.text

    start = time.perf_counter()
    driver.get(f"{base}/images/{image_id}")
    editor = driver.find_element(By.ID, "editor")
    until(driver, lambda d: editor.get_attribute("data-state") in ("ready", "error"))
    ready = time.perf_counter() - start
    assert editor.get_attribute("data-state") == "ready", driver.find_element(By.ID, "editor-status").text
    ids = api.session.get(f"{base}/images/{image_id}/editor/labels.u32", cookies=driver_cookies(driver),
                          headers={"Accept-Encoding": "gzip"}, stream=True)
    sent = len(ids.raw.read())

    canvas = driver.find_element(By.ID, "label-editor")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    width = canvas.rect["width"]
    scale = width / size

    def offset(x, y):
        return round((x + 0.5) * scale - width / 2), round((y + 0.5) * scale - canvas.rect["height"] / 2)

    status = driver.find_element(By.ID, "editor-status")
    driver.find_element(By.CSS_SELECTOR, '#editor button[data-tool="delete"]').click()
    start = time.perf_counter()
    ActionChains(driver, duration=0).move_to_element_with_offset(canvas, *offset(spacing // 2, spacing // 2)).click().perform()
    until(driver, lambda d: status.text.startswith("Nucleus deleted"))
    deleted = time.perf_counter() - start

    driver.execute_script("var b = document.getElementById('editor-brush'); b.value = 10; b.dispatchEvent(new Event('input'))")
    driver.find_element(By.CSS_SELECTOR, '#editor button[data-tool="new"]').click()
    actions = ActionChains(driver, duration=0).move_to_element_with_offset(canvas, *offset(size * 0.1, size * 0.5))
    actions.click_and_hold()
    for step in range(1, 20):
        actions.move_to_element_with_offset(canvas, *offset(size * (0.1 + 0.04 * step), size * 0.5))
    start = time.perf_counter()
    actions.release().perform()
    until(driver, lambda d: editor.get_attribute("data-state") == "edited")
    stroke = time.perf_counter() - start

    start = time.perf_counter()
    driver.find_element(By.CSS_SELECTOR, '#editor button[data-tool="save"]').click()
    until(driver, lambda d: editor.get_attribute("data-state") in ("saved", "error"))
    saved = time.perf_counter() - start
    assert editor.get_attribute("data-state") == "saved", status.text
    return {"size": size, "nuclei": int(labels.max()), "ready": ready, "sent": sent, "raw": size * size * 4,
            "delete": deleted, "stroke": stroke, "save": saved}


def driver_cookies(driver) -> dict:
    return {cookie["name"]: cookie["value"] for cookie in driver.get_cookies()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512", help="image sides, e.g. 512,2048,4096")
    parser.add_argument("--spacing", type=int, default=20, help="pixels between nucleus centres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nucleus-editor-bench-") as temp:
        server, base, token = serve(Path(temp) / "data")
        driver = browser(Path(temp) / "profile")
        try:
            from selenium.webdriver.common.by import By

            driver.get(f"{base}/login")
            driver.find_element(By.NAME, "token").send_keys(token)
            driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            until(driver, lambda d: "/login" not in d.current_url)
            print(f"{'size':>11} {'nuclei':>7} {'ready s':>8} {'ids KiB (raw)':>18} {'delete s':>9} {'stroke s':>9} {'save s':>7}")
            for size in (int(s) for s in args.sizes.split(",")):
                row = measure(driver, base, token, size, args.spacing)
                print(f"{size:>5}x{size:<5} {row['nuclei']:>7} {row['ready']:>8.2f} "
                      f"{row['sent'] / 1024:>8.0f} ({row['raw'] / 1024:>6.0f}) {row['delete']:>9.2f} "
                      f"{row['stroke']:>9.2f} {row['save']:>7.2f}", flush=True)
        finally:
            driver.quit()
            server.shutdown()


if __name__ == "__main__":
    main()
