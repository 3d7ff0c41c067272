"""The API service: the JSON API under /api/v1, the web pages, and /healthz.

`create_app()` builds it from settings; `services.api.wsgi:app` is what gunicorn runs. The API never
loads a model: it validates, stores, records and enqueues, and reads results back.
"""
from __future__ import annotations

from datetime import timedelta

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from shared.infra.settings import Settings, get_settings
from shared.infra.storage import make_store

# A request may carry several files, each up to settings.max_upload_bytes (checked per file); this
# bounds the request as a whole.
MAX_FILES_SIZE_FACTOR = 8


def create_app(settings: Settings | None = None) -> Flask:
    from services.api.database import init_database
    from services.api.errors import register_error_handlers
    from services.api.headers import register_security_headers
    from services.api.health import health
    from services.api.limits import init_limits
    from services.api.prometheus import prometheus
    from services.api.rest import api
    from services.api.secret import load_secret_key
    from services.api.web import web

    settings = settings or get_settings()
    app = Flask(__name__)
    if settings.trusted_proxies > 0:  # the client's own address (throttling) and scheme, as the proxies saw them
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    app.config.update(
        NUCLEUS_SETTINGS=settings,
        SECRET_KEY=load_secret_key(settings),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes * MAX_FILES_SIZE_FACTOR,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_lifetime_hours),
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    app.extensions["nucleus_store"] = make_store(settings)
    init_database(app)
    register_error_handlers(app)
    register_security_headers(app, settings)
    app.register_blueprint(health)
    app.register_blueprint(prometheus)
    app.register_blueprint(api)
    app.register_blueprint(web)
    init_limits(app, settings)  # after the blueprints: it wraps their heavy routes
    return app
