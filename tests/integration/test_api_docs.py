"""/api/docs: the OpenAPI document as a page, for anyone signed in, with every operation of the
document (and so every /api/v1 route, which test_api_rest checks against the document), rendered on
the server with no script and nothing from elsewhere."""
from __future__ import annotations

import re

from services.api.openapi import openapi_document
from testkit.api import csrf_from


def sign_in(harness, role="viewer"):
    client = harness.app.test_client()
    page = client.get("/login")
    response = client.post("/login", data={"token": harness.token(role), "csrf_token": csrf_from(page.data),
                                           "next": "/"})
    assert response.status_code == 303
    return client


def test_the_docs_page_needs_a_session(harness):
    response = harness.app.test_client().get("/api/docs")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_the_docs_page_shows_every_operation_and_schema(harness):
    response = sign_in(harness).get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    document = openapi_document()
    shown = set(re.findall(r'data-method="([A-Z]+)" data-path="([^"]+)"', html))
    expected = {(method.upper(), "/api/v1" + path) for path, item in document["paths"].items() for method in item}
    assert shown == expected and len(expected) >= 25
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    for target in set(re.findall(r'href="#schema-([A-Za-z]+)"', html)):
        assert target in document["components"]["schemas"], target  # every type link lands on a schema
    assert "Retry-After" in html and "<code>Authorization: Bearer &lt;token&gt;</code>" in html  # escaped, code spans kept


def test_the_docs_page_loads_nothing_from_elsewhere_and_runs_no_inline_script(harness):
    response = sign_in(harness).get("/api/docs")
    html = response.get_data(as_text=True)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy  # the stylesheet loads, no inline code
    assert re.findall(r'(?:src|href)="(?:https?:)?//', html) == []
    for script in re.findall(r"<script[^>]*>(.*?)</script>", html, re.S):
        assert script.strip() == ""  # only <script src=...> from this site
    assert "<style" not in html and " style=" not in html
