"""Rate limits and throttling, all through one Flask-Limiter per app.

- Heavy routes (label uploads, exports, plots, training runs, re-segmentations) are limited per token (a signed-in
  person counts as the token they signed in with); the API route and its page share one budget.
  Every label upload counts; of the others only those served (a run started, a file sent).
- Image uploads count their files against `upload_rate_per_minute` per token.
- Failed sign-ins and unknown bearer tokens are counted per client address and per token prefix;
  past `auth_failure_limit` they are answered 429. A valid token is never refused by this.

Windows are moving (limits' moving-window strategy). The embedded default runs one API process, so
the counts live in memory there; when the broker is Redis (production, several API processes) they
live in that Redis, shared by every process. If Redis cannot be reached the limits let requests
through: a rate limit is no reason to refuse work while the broker is down.
"""
from __future__ import annotations

import logging
import math
import time

from flask import Flask, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse

from services.api.access import Principal
from services.api.errors import ApiError, error_response
from shared.infra.settings import Settings

log = logging.getLogger(__name__)

EXTENSION_KEY = "nucleus_limiter"
KEY_PREFIX = "nucleus"
REDIS_TIMEOUT_SECONDS = 0.5
TOKEN_PREFIX_CHARS = 12  # "nuc_" and 8 random characters: one token's guesses share a key, random guesses do not

# Heavy routes by the setting that limits them; the endpoints of one setting share its budget.
HEAVY_ROUTES = {
    "label_upload_rate": ("api.post_labels", "web.upload_labels", "web.editor_save"),
    "export_rate": ("api.experiment_nuclei", "api.experiment_nuclei_parquet", "api.experiment_archive_zip",
                    "api.experiment_results",
                    "web.experiment_results_table", "web.experiment_nuclei_table", "web.experiment_archive_zip"),
    "plot_rate": ("web.experiment_plot", "web.experiment_marker_plot", "web.image_area_plot"),
    "training_run_rate": ("api.post_training_run", "web.start_training"),
    "resegment_rate": ("api.post_resegment", "web.resegment"),
}
WHAT = {"label_upload_rate": "label uploads", "export_rate": "exports", "plot_rate": "plots",
        "training_run_rate": "training runs", "resegment_rate": "re-segmentations"}
# Requests of these endpoints that are not heavy: the results list is an export only as ?format=csv|parquet.
EXEMPT_WHEN = {"api.experiment_results": lambda: request.args.get("format", "json") == "json"}
# These count only what was served (a refused request cost little); a label upload costs its decoding either way.
COUNT_SUCCESSES_ONLY = {"export_rate", "plot_rate", "training_run_rate", "resegment_rate"}


def _succeeded(response) -> bool:
    return response.status_code < 400


class RateLimited(ApiError):
    def __init__(self, message: str, retry_after: float, code: str = "rate_limited"):
        super().__init__(429, code, message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}


def storage_uri(settings: Settings) -> str:
    broker = settings.resolved_broker_url
    return broker if broker.startswith(("redis://", "rediss://")) else "memory://"


def _token_key() -> str:
    principal = g.get("principal")
    return f"token:{principal.token_id}" if principal is not None else f"address:{request.remote_addr}"


def init_limits(app: Flask, settings: Settings) -> Limiter:
    uri = storage_uri(settings)
    options = ({"socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}
               if uri.startswith("redis") else {})
    limiter = Limiter(key_func=_token_key, app=app, storage_uri=uri, storage_options=options,
                      strategy="moving-window", key_prefix=KEY_PREFIX, swallow_errors=True,
                      headers_enabled=False)
    app.extensions[EXTENSION_KEY] = limiter
    if settings.auth_failure_limit.strip():
        parse(settings.auth_failure_limit)  # a malformed setting stops the start, not a request
    for setting, endpoints in HEAVY_ROUTES.items():
        value = getattr(settings, setting).strip()
        if not value:
            continue
        parse(value)  # a malformed setting stops the start, not a request
        for endpoint in endpoints:
            if endpoint not in app.view_functions:
                log.warning("no route %s to rate-limit by %s", endpoint, setting)
                continue
            # one scope per setting: every endpoint of a setting draws on the same budget
            limit = limiter.shared_limit(value, scope=setting, key_func=_token_key,
                                         exempt_when=EXEMPT_WHEN.get(endpoint),
                                         deduct_when=_succeeded if setting in COUNT_SUCCESSES_ONLY else None,
                                         error_message=f"too many {WHAT[setting]}: at most {value} for this token")
            app.view_functions[endpoint] = limit(app.view_functions[endpoint])

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        current = limiter.current_limit
        wait = current.window[0] - time.time() if current is not None else 60  # window[0]: when it resets
        seconds = max(1, math.ceil(wait))
        body, status, headers = error_response(429, "rate_limited", f"{exc.description}; retry in {seconds} s")
        return body, status, {**headers, "Retry-After": str(seconds)}

    return limiter


def _limiter() -> Limiter:
    return current_app.extensions[EXTENSION_KEY]


def _hit(limit: str, cost: int, *key: str) -> float:
    """Count `cost` against the moving window; 0 when it fits, else the seconds until it would."""
    strategy = _limiter().limiter
    item = parse(limit)
    key = (KEY_PREFIX, *key)
    try:
        if strategy.hit(item, *key, cost=cost):
            return 0.0
        reset, _ = strategy.get_window_stats(item, *key)
        return max(1.0, reset - time.time())
    except Exception as exc:  # noqa: BLE001 - any storage failure: let the request through
        log.warning("rate limit skipped, its storage is unreachable: %s", exc)
        return 0.0


def check_upload_rate(principal: Principal, files: int) -> None:
    """Count `files` image files against the principal's minute, or answer 429 with Retry-After."""
    settings: Settings = current_app.config["NUCLEUS_SETTINGS"]
    per_minute = settings.upload_rate_per_minute
    if per_minute <= 0 or files == 0:
        return
    if files > per_minute:
        raise RateLimited(f"this request holds {files} files, more than the {per_minute} per minute allowed; "
                          "send fewer files per request", retry_after=60)
    wait = _hit(f"{per_minute}/minute", files, "uploads", f"token:{principal.token_id}")
    if wait > 0:
        raise RateLimited(f"too many uploads: at most {per_minute} files per minute for this token; "
                          f"retry in {math.ceil(wait)} s", retry_after=wait)


def token_prefix(raw: str) -> str:
    return raw[:TOKEN_PREFIX_CHARS]


def count_auth_failure(raw_token: str) -> None:
    """Record a failed sign-in or unknown bearer token from this client; past the limit, answer 429."""
    limit = current_app.config["NUCLEUS_SETTINGS"].auth_failure_limit.strip()
    if not limit:
        return
    waits = [_hit(limit, 1, "auth-failures", "address", request.remote_addr or "unknown"),
             _hit(limit, 1, "auth-failures", "prefix", token_prefix(raw_token))]
    if max(waits) > 0:
        raise RateLimited(f"too many failed sign-ins or unknown tokens (at most {limit}); "
                          f"retry in {math.ceil(max(waits))} s", retry_after=max(waits), code="too_many_failures")
