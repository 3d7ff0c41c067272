"""/api/docs: the OpenAPI document of /api/v1 as a page, rendered on the server (nothing loaded from
elsewhere, no script), for anyone signed in."""
from __future__ import annotations

from flask import make_response, render_template

from services.api.headers import PAGE_POLICY
from services.api.openapi import docs_view
from services.api.web import web


@web.get("/api/docs")
def api_docs():
    response = make_response(render_template("api_docs.html", **docs_view()))
    # /api/ paths get the JSON policy (nothing may load); this one is a page with the site's stylesheet
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response
