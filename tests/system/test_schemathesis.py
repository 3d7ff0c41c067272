"""The OpenAPI document against the running API (schemathesis): for every operation, generated
requests with an admin token get no 5xx, and every response matches the documented schema, status
codes, content types and headers.

The operations come from the document the API serves (built in-process here for collection; the test
also checks the served one is the same). `POST /training-runs` is left out: every accepted example
would start a real training run on the test machine's CPU (tests/integration/test_api_training.py covers it).

Schemathesis also sends every operation requests with invalid credentials and expects 401/403. Past
NUCLEUS_AUTH_FAILURE_LIMIT those are rightly answered 429 (tests/integration/test_throttling.py checks that), so
this module's stack runs with a limit those checks cannot reach: what is checked here is that an
unknown token is refused, not how often.

Examples per operation: NUCLEUS_SCHEMATHESIS_EXAMPLES (default 8).
"""
from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from services.api.openapi import openapi_document
from testkit.stack import EmbeddedStack

EXAMPLES = int(os.environ.get("NUCLEUS_SCHEMATHESIS_EXAMPLES", "8"))
SKIPPED = {"POST /training-runs"}

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory):
    """The embedded stack, with the failed-sign-in throttle far above the invalid-credential requests sent here."""
    stack = EmbeddedStack(tmp_path_factory.mktemp("schemathesis"), auth_failure_limit="100000/minute")
    stack.start()
    yield stack
    stack.stop()


def test_served_document_is_the_one_checked(embedded_stack, stack_client):
    response = stack_client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.json() == openapi_document()


@pytest.mark.parametrize("label", sorted(set(OPERATIONS) - SKIPPED))
def test_operation_matches_the_document(label, embedded_stack):
    operation = OPERATIONS[label]
    base_url = f"{embedded_stack.url}/api/v1"
    headers = {"Authorization": f"Bearer {embedded_stack.token}"}

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(base_url=base_url, headers=headers)

    run()
