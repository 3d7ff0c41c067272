"""The web pages. A signed cookie holds the id of a server-side session (services.api.web.sessions);
the session and its token are checked again on every request, so signing out or revoking the token
ends it."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, g, redirect, request, url_for

from services.api.web.csrf import check_csrf, csrf_token
from services.api.web.sessions import signed_in_principal

web = Blueprint("web", __name__)  # templates and /static are the app's own (services/api/templates, static)

OPEN_ENDPOINTS = {"web.login", "web.logout"}


def page_url(number: int) -> str:
    """This page's URL with its filters kept and another page number."""
    args = request.args.to_dict()
    args["page"] = str(number)
    return f"{request.path}?{urlencode(args)}"


@web.app_context_processor
def _template_globals():
    return {"csrf_token": csrf_token, "principal": g.get("principal"), "page_url": page_url}


@web.before_request
def guard():
    if request.method == "POST":
        check_csrf()
    g.principal = signed_in_principal()
    if g.principal is None and request.endpoint not in OPEN_ENDPOINTS:
        return redirect(url_for("web.login", next=request.full_path if request.query_string else request.path))


from services.api.web import api_docs, pages  # noqa: E402,F401  (routes register on `web`)
