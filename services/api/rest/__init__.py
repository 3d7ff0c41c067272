"""The JSON API under /api/v1. Every route needs `Authorization: Bearer <token>`."""
from __future__ import annotations

from flask import Blueprint, g, request

from services.api.access import Principal
from services.api.database import db
from services.api.errors import ApiError
from services.api.limits import count_auth_failure
from shared.infra.auth import verify_token

api = Blueprint("api", __name__, url_prefix="/api/v1")


@api.before_request
def authenticate():
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
    token = verify_token(db(), raw.strip())
    if token is None:
        count_auth_failure(raw.strip())  # 429 once this client or token prefix has failed too often
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    g.principal = Principal.from_token(token)


from services.api.rest import experiments, images, jobs, labels, meta, model_versions, resegment, training  # noqa: E402,F401  (routes register on `api`)
