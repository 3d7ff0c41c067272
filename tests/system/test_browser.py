"""The pages in a real headless browser (Debian's chromium through its chromedriver, driven by
Selenium) against `nucleus up`: sign in with a token, create an experiment, upload two real DSB
images through the form, wait for the rows to show `done` with a count, see the plots and an
image's overlay actually loaded. Screenshots land in the test's tmp dir."""
from __future__ import annotations

from testkit.browser import wait

RESULT_TIMEOUT = 180  # two 256x256 images on 2 busy CPU cores, model load included


def image_loaded(driver, element) -> bool:
    return driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", element)


def done_rows(driver) -> list[tuple[str, str]]:
    """(status, count) of every image row of the experiment page's table."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#images tbody tr[data-image-id]")
    return [(row.get_attribute("data-status"), row.find_element(By.CSS_SELECTOR, "td.count").text.strip())
            for row in rows]


def test_sign_in_upload_and_see_results_in_a_browser(browser, embedded_stack, dsb_samples, tmp_path):
    from selenium.webdriver.common.by import By

    base = embedded_stack.url
    browser.get(f"{base}/")
    assert "/login" in browser.current_url  # the pages need a session
    browser.find_element(By.NAME, "token").send_keys(embedded_stack.token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.ID, "new-experiment"), message="the experiments page after sign-in")

    form = browser.find_element(By.ID, "new-experiment")
    form.find_element(By.NAME, "name").send_keys("browser-plate")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: d.current_url.endswith("/experiments/browser-plate"), message="the new experiment")

    upload = browser.find_element(By.ID, "upload")
    paths = [str(sample.path) for sample in dsb_samples[:2]]
    upload.find_element(By.NAME, "file").send_keys("\n".join(paths))  # a multiple file input takes lines
    upload.find_element(By.NAME, "condition").send_keys("control")
    upload.find_element(By.NAME, "well").send_keys("B03")
    upload.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "2 image(s) queued" in d.find_element(By.CSS_SELECTOR, ".flash").text,
         message="the upload's flash message")

    # the table refreshes itself while jobs are pending: no reload here
    wait(browser, lambda d: (rows := done_rows(d)) and len(rows) == 2 and all(s == "done" for s, _ in rows),
         timeout=RESULT_TIMEOUT, message=f"both rows done; log tail:\n{embedded_stack.log_tail(20)}")
    counts = [int(count) for _status, count in done_rows(browser)]
    assert all(count > 0 for count in counts), counts

    thumbs = browser.find_elements(By.CSS_SELECTOR, "#images img.thumb")
    assert len(thumbs) == 2
    for thumb in thumbs:
        browser.execute_script("arguments[0].scrollIntoView()", thumb)  # thumbnails load lazily
    wait(browser, lambda d: all(image_loaded(d, t) for t in thumbs), message="overlay thumbnails")
    plots = browser.find_elements(By.CSS_SELECTOR, "img[data-plot]")
    assert len(plots) == 3
    wait(browser, lambda d: all(image_loaded(d, p) for p in plots), message="the experiment's plots")
    assert all(browser.execute_script("return arguments[0].naturalWidth", p) >= 300 for p in plots)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "experiment.png"))

    browser.find_element(By.CSS_SELECTOR, "#images tbody tr[data-image-id] td:nth-child(2) a").click()
    overlay = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "img.overlay"), message="the image page")[0]
    wait(browser, lambda d: image_loaded(d, overlay), message="the overlay on the image page")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == dsb_samples[0].width
    count = int(browser.find_element(By.ID, "count").text)
    assert count in counts
    assert len(browser.find_elements(By.CSS_SELECTOR, "#nuclei tbody tr")) == min(count, 500)
    browser.save_screenshot(str(tmp_path / "image.png"))
    for shot in ("experiment.png", "image.png"):
        assert (tmp_path / shot).read_bytes().startswith(b"\x89PNG")
