"""Debian's chromium, headless, through its chromedriver (Selenium): the `browser` fixture's driver
and a wait that tolerates a page re-rendering under it."""
from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("NUCLEUS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("NUCLEUS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
LAUNCH_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1600")


def missing_browser() -> Path | None:
    """The first of chromium and chromedriver that is not installed, or None."""
    return next((path for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()), None)


def start_chromium(profile: Path):
    """A headless chromium with its profile (and chromedriver's log) in `profile`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in LAUNCH_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    return driver


def wait(driver, condition, timeout: float = 30, message: str = ""):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page re-renders its table while jobs run: an element read mid-refresh is simply read again
    return WebDriverWait(driver, timeout, poll_frequency=0.5,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)
