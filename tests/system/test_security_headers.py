"""Every response carries nosniff and anti-framing headers; pages carry a content security policy that
runs scripts and styles from this site only (so no template holds an inline script, event handler or style)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from testkit.api import csrf_from

TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "api" / "templates"


def directives(policy: str) -> dict[str, list[str]]:
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {words[0]: words[1:] for words in parts}


def assert_common(response, what):
    assert response.headers["X-Content-Type-Options"] == "nosniff", what
    assert response.headers["X-Frame-Options"] == "DENY", what
    assert directives(response.headers["Content-Security-Policy"])["frame-ancestors"] == ["'none'"], what


@pytest.fixture(scope="module")
def browser(harness):
    client = harness.app.test_client()
    client.post("/login", data={"token": harness.token("admin"), "csrf_token": csrf_from(client.get("/login").data)})
    return client


def test_pages_have_a_strict_policy(harness, browser):
    anonymous = harness.app.test_client()
    responses = {"login": anonymous.get("/login"), "index": browser.get("/"), "models": browser.get("/models"),
                 "missing page": browser.get("/experiments/nothing-here"), "script": browser.get("/static/app.js"),
                 "redirect": anonymous.get("/")}
    assert responses["index"].status_code == 200 and responses["missing page"].status_code == 404
    for what, response in responses.items():
        assert_common(response, what)
        policy = directives(response.headers["Content-Security-Policy"])
        assert policy["default-src"] == ["'self'"], what
        assert "'unsafe-inline'" not in policy.get("script-src", []) and "'unsafe-eval'" not in str(policy), what
        assert set(policy["img-src"]) == {"'self'", "data:", "blob:"}, what  # the label editor's canvas
        assert policy["object-src"] == ["'none'"], what
    assert "Strict-Transport-Security" not in responses["index"].headers  # only with NUCLEUS_SECURE_COOKIES


def test_api_and_health_responses_carry_the_headers(harness, admin):
    anonymous = harness.app.test_client()
    for what, response in {"list": admin.get("/api/v1/experiments"), "401": anonymous.get("/api/v1/experiments"),
                           "404": admin.get("/api/v1/images/none"), "health": anonymous.get("/healthz")}.items():
        assert_common(response, what)
        assert directives(response.headers["Content-Security-Policy"])["default-src"] == ["'none'"], what


def test_rendered_pages_load_scripts_only_from_files(browser):
    for path in ("/", "/models", "/login"):
        html = browser.get(path).data.decode()
        scripts = re.findall(r"<script\b([^>]*)>", html)
        assert scripts and all("src=" in attributes for attributes in scripts), path


def test_templates_hold_no_inline_script_or_handler():
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        for attributes in re.findall(r"<script\b([^>]*)>", text):
            assert "src=" in attributes, f"inline <script> in {template.name}"
        assert not re.search(r"<[^>]*\son[a-z]+\s*=", text), f"an on* handler in {template.name}"
        assert "javascript:" not in text, template.name
        # inline styles are refused too (style-src falls back to 'self'); scripts may still set element.style
        assert not re.search(r"<[^>]*\sstyle\s*=|<style\b", text), f"an inline style in {template.name}"
