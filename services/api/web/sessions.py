"""Server-side web sessions. Signing in stores a session row and puts its random id in the signed
cookie; every page looks the row up, so signing out (or revoking the token, or the lifetime running
out) ends the session for every copy of the cookie. Only the id's SHA-256 is stored."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from flask import current_app, session
from sqlalchemy import delete

from services.api.access import Principal
from services.api.database import db
from services.api.web.csrf import SESSION_KEY as CSRF_KEY
from shared.infra.db.tables import Token, WebSession, utcnow

SESSION_ID_KEY = "sid"
LAST_SEEN_EVERY = timedelta(minutes=1)  # last_seen is written at most this often, not on every page


def lifetime() -> timedelta:
    return timedelta(hours=current_app.config["NUCLEUS_SETTINGS"].session_lifetime_hours)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite drops the zone


def start_session(token: Token) -> None:
    """A fresh cookie session for `token` (the form's CSRF token carries over)."""
    csrf = session.get(CSRF_KEY)
    session.clear()
    session_id = secrets.token_urlsafe(32)
    db().execute(delete(WebSession).where(WebSession.created < utcnow() - lifetime()))  # ended sessions go
    db().add(WebSession(id_hash=_hash(session_id), token_id=token.id))
    db().commit()
    session.permanent = True  # the cookie expires with the session's lifetime
    session[SESSION_ID_KEY] = session_id
    if csrf:
        session[CSRF_KEY] = csrf


def signed_in_principal() -> Principal | None:
    session_id = session.get(SESSION_ID_KEY)
    if not isinstance(session_id, str):
        return None
    record = db().get(WebSession, _hash(session_id))
    now = utcnow()
    token = db().get(Token, record.token_id) if record is not None else None
    if (record is None or record.revoked is not None or _aware(record.created) + lifetime() <= now
            or token is None or token.revoked is not None):
        session.pop(SESSION_ID_KEY, None)
        return None
    if now - _aware(record.last_seen) >= LAST_SEEN_EVERY:
        record.last_seen = now
        db().commit()
    return Principal.from_token(token)


def end_session() -> None:
    """Revoke this browser's session on the server and clear its cookie."""
    session_id = session.get(SESSION_ID_KEY)
    if isinstance(session_id, str):
        record = db().get(WebSession, _hash(session_id))
        if record is not None and record.revoked is None:
            record.revoked = utcnow()
            db().commit()
    session.clear()
