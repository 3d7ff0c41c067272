"""One SQL session per request, opened on first use and closed when the request ends."""
from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from shared.db.session import get_engine


def db() -> Session:
    if "db_session" not in g:
        engine = get_engine(current_app.config["NUCLEUS_SETTINGS"].resolved_database_url)
        g.db_session = Session(bind=engine, expire_on_commit=False)
    return g.db_session


def init_database(app: Flask) -> None:
    @app.teardown_appcontext
    def _close_session(_exc):
        session = g.pop("db_session", None)
        if session is not None:
            session.close()  # rolls back anything left uncommitted
