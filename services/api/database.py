"""One SQL session per request, opened on first use and closed when the request ends."""
from __future__ import annotations

import logging

from flask import Flask, current_app, g
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared.infra.db.session import get_engine

log = logging.getLogger(__name__)


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
            try:
                session.close()  # rolls back anything left uncommitted
            except SQLAlchemyError as exc:
                # The database went away during the request: the answer (a 503) is already made, and
                # an error here would reach gunicorn and turn it into a bare 500. The pool has
                # already invalidated the dead connection.
                log.warning("could not close the request's database session: %s", exc)
