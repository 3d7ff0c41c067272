"""Reading JSON request bodies the same way in every route."""
from __future__ import annotations

from flask import request

from services.api.errors import ApiError


def optional_json_object(example: str) -> dict:
    """The request's JSON object, {} for an empty body; anything else is a 400 showing `example`."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", f"send a JSON object such as {example}")
    return body
