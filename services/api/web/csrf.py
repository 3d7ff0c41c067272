"""A tiny CSRF guard: one random token per session, required on every POST from a page's form
(field `csrf_token`, or header `X-CSRF-Token` for scripts)."""
from __future__ import annotations

import hmac
import secrets

from flask import request, session

from services.api.errors import ApiError

SESSION_KEY = "csrf"


def csrf_token() -> str:
    if SESSION_KEY not in session:
        session[SESSION_KEY] = secrets.token_urlsafe(32)
    return session[SESSION_KEY]


def check_csrf() -> None:
    expected = session.get(SESSION_KEY)
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    if not expected or not hmac.compare_digest(str(expected), str(sent)):
        raise ApiError(400, "csrf_failed", "the form has expired or did not come from this site; reload the page "
                       "and try again")
