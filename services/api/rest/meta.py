"""The OpenAPI document describing this API."""
from __future__ import annotations

from flask import jsonify

from services.api.access import require_role
from services.api.openapi import openapi_document
from services.api.rest import api


@api.get("/openapi.json")
def openapi():
    require_role("viewer")
    return jsonify(openapi_document())
