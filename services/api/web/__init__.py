"""The web pages. A signed-cookie session holds the id of the token someone signed in with; the
token is checked again on every request, so revoking it signs them out."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, g, redirect, request, session, url_for

from services.api.access import Principal
from services.api.database import db
from services.api.web.csrf import check_csrf, csrf_token
from shared.db.models import Token

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


def signed_in_principal() -> Principal | None:
    token_id = session.get("token_id")
    if token_id is None:
        return None
    token = db().get(Token, token_id)
    if token is None or token.revoked is not None:
        session.pop("token_id", None)
        return None
    return Principal.from_token(token)


@web.before_request
def guard():
    if request.method == "POST":
        check_csrf()
    g.principal = signed_in_principal()
    if g.principal is None and request.endpoint not in OPEN_ENDPOINTS:
        return redirect(url_for("web.login", next=request.full_path if request.query_string else request.path))


from services.api.web import pages  # noqa: E402,F401  (routes register on `web`)
