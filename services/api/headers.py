"""Security headers on every response: no MIME sniffing, no framing by other sites, a content
security policy (pages load scripts, styles and images from this site only; images may also be
data: and blob: URLs, which the label editor's canvas draws), and HSTS when served over TLS."""
from __future__ import annotations

from flask import Flask, Response, request

from shared.infra.settings import Settings

PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
               "form-action 'self'; frame-ancestors 'none'")
API_POLICY = "default-src 'none'; frame-ancestors 'none'"  # JSON and files: nothing to load, nothing to run
HSTS = "max-age=31536000"


def is_api_path(path: str) -> bool:
    return path.startswith("/api/") or path in ("/healthz", "/metrics")


def register_security_headers(app: Flask, settings: Settings) -> None:
    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Content-Security-Policy", API_POLICY if is_api_path(request.path) else PAGE_POLICY)
        headers.setdefault("Referrer-Policy", "same-origin")
        if settings.secure_cookies:
            headers.setdefault("Strict-Transport-Security", HSTS)
        return response
