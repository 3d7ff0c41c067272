"""Web sessions live on the server: signing out is a POST with the CSRF token, it ends the session for
every copy of the cookie, sessions expire, and a TLS deployment marks the cookie Secure and sends HSTS."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from shared.infra.db.tables import WebSession
from testkit.api import csrf_from


def sign_in(app, token: str):
    client = app.test_client()
    response = client.post("/login", data={"token": token, "csrf_token": csrf_from(client.get("/login").data),
                                           "next": "/"})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    return client, csrf_from(client.get("/").data)


def copy_of(app, client):
    """Another browser holding the same session cookie (as if it had been copied)."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def test_get_logout_no_longer_signs_out(harness):
    client, _ = sign_in(harness.app, harness.token("viewer"))
    assert client.get("/logout").status_code == 405
    assert client.get("/").status_code == 200


def test_logout_needs_the_csrf_token(harness):
    client, csrf = sign_in(harness.app, harness.token("viewer"))
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert client.get("/").status_code == 200  # still signed in
    page = client.get("/").data.decode()
    assert 'action="/logout"' in page and 'method="post"' in page  # the sign-out control is a form


def test_a_copied_cookie_stops_working_after_logout(harness):
    client, csrf = sign_in(harness.app, harness.token("viewer"))
    thief = copy_of(harness.app, client)
    assert thief.get("/").status_code == 200  # the copy works while the session lives
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/").status_code == 302
    refused = thief.get("/")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")


def test_sessions_are_stored_hashed_and_revoked(harness):
    client, csrf = sign_in(harness.app, harness.token("viewer"))
    cookie = client.get_cookie("session").value
    with harness.session() as session:
        before = {row.id_hash: row.revoked for row in session.scalars(select(WebSession))}
    assert before and all(len(key) == 64 for key in before)
    assert not any(key in cookie for key in before)  # the cookie holds the id, the table its hash
    client.post("/logout", data={"csrf_token": csrf})
    with harness.session() as session:
        after = {row.id_hash: row.revoked for row in session.scalars(select(WebSession))}
    assert sum(1 for key, revoked in after.items() if revoked is not None and before.get(key) is None) == 1


def test_a_session_ends_with_its_lifetime(harness):
    client, _ = sign_in(harness.app, harness.token("viewer"))
    with harness.session() as session:
        newest = session.scalars(select(WebSession).order_by(WebSession.created.desc())).first()
        newest.created -= timedelta(hours=harness.settings.session_lifetime_hours, seconds=1)
        expired = newest.id_hash
    assert client.get("/").status_code == 302
    sign_in(harness.app, harness.token("viewer"))
    with harness.session() as session:
        assert session.get(WebSession, expired) is None  # a sign-in clears away ended sessions


def test_secure_cookies_and_hsts_behind_tls(harness):
    from services.api import create_app

    plain = harness.app.test_client().get("/login")
    assert "Strict-Transport-Security" not in plain.headers

    app = create_app(harness.settings.model_copy(update={"secure_cookies": True}))
    client = app.test_client()
    page = client.get("/login", base_url="https://localhost")
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    signed_in = client.post("/login", base_url="https://localhost",
                            data={"token": harness.token("viewer"), "csrf_token": csrf_from(page.data)})
    assert signed_in.status_code == 303
    cookie = signed_in.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Expires=" in cookie  # the browser drops it with the session's lifetime
    assert "Strict-Transport-Security" in client.get("/api/v1/experiments", base_url="https://localhost",
                                                     headers={"Authorization": "Bearer x"}).headers
