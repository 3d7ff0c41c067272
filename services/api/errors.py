"""One error shape everywhere: `{"error": {"code", "message"}}` for /api and /healthz, an HTML
page for the web pages. Bad input is a 4xx, an unreachable dependency a 503 with Retry-After."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from shared.domain.imaging.errors import ImageError
from shared.infra.storage import StorageUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """Raised anywhere in a request to answer with this status and error body."""

    def __init__(self, status: int, code: str, message: str, /, **details):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}  # extra response headers, e.g. Retry-After on a 429


class Unavailable(ApiError):
    def __init__(self, code: str, message: str):
        super().__init__(503, code, message)


def wants_json() -> bool:
    path = request.path
    return path.startswith("/api/") or path == "/healthz" or request.accept_mimetypes.best == "application/json"


def error_response(status: int, code: str, message: str, /, **details):
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else {}
    if wants_json():
        body = {"error": {"code": code, "message": message, **details}}
        return jsonify(body), status, headers
    page = render_template("error.html", status=status, code=code, message=message)
    return page, status, headers


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body, status, headers = error_response(exc.status, exc.code, exc.message, **exc.details)
        return body, status, {**headers, **exc.headers}

    @app.errorhandler(ImageError)
    def _image_error(exc: ImageError):
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(StorageUnavailable)
    def _storage_down(exc: StorageUnavailable):
        log.warning("object store unavailable: %s", exc)
        return error_response(503, "storage_unavailable", "the object store is unreachable; retry later")

    @app.errorhandler(OperationalError)
    def _database_down(exc: OperationalError):
        log.warning("database unavailable: %s", exc)
        return error_response(503, "database_unavailable", "the database is unreachable or busy; retry later")

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError):
        if exc.connection_invalidated:
            return _database_down(exc)
        log.exception("database error")
        return error_response(500, "internal_error", "internal error")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            message = "the upload is larger than this server accepts"
        return error_response(exc.code or 500, code, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error")
