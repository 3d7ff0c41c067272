"""The two API calls the ingester makes, each answer sorted into what to do next.

- `sent`:     2xx; `duplicate` is true when the server already had these bytes in the experiment
- `rejected`: a 4xx about this file (not an image, too large...): retrying cannot help
- `retry`:    connection refused or reset, a timeout, 5xx, 408 or 429 (with `retry_after` when the
              server sent Retry-After)
- `fatal`:    401/403 (the token), or the experiment cannot be created: nothing can be sent
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import requests

from nucleus.client import ApiError, Client, ServerUnreachable, parse_retry_after

__all__ = ["ApiClient", "Backoff", "Outcome", "parse_retry_after"]

RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


@dataclass
class Outcome:
    kind: str                      # sent | rejected | retry | fatal | missing_experiment
    message: str = ""
    status: int | None = None
    retry_after: float | None = None
    body: dict = field(default_factory=dict)

    @property
    def duplicate(self) -> bool:
        return bool(self.body.get("duplicate"))


def classify(error: ApiError) -> Outcome:
    """What a refusal means for the ingester."""
    if isinstance(error, ServerUnreachable):
        return Outcome("retry", error.message)
    message = f"{error.status} {error.code}: {error.message}"
    if error.status in RETRY_STATUSES:
        return Outcome("retry", message, error.status, error.retry_after)
    if error.status in (401, 403):
        return Outcome("fatal", f"the server refused the token ({message})", error.status)
    return Outcome("rejected", message, error.status)


class Backoff:
    """Exponential delays with jitter, reset by a success; the server's Retry-After wins when given."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0):
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        self.failures += 1
        if retry_after is not None:
            return retry_after
        delay = min(self.maximum, self.initial * self.factor ** (self.failures - 1))
        return delay * random.uniform(0.75, 1.0)

    def reset(self) -> None:
        self.failures = 0


class ApiClient:
    """The ingester's two calls through `nucleus.client.Client`, which waits nothing out itself
    (retries=0): the ingester pauses every upload together on its own backoff."""

    def __init__(self, server: str, token: str, experiment: str, session: requests.Session | None = None):
        self.api = Client(server, token, retries=0, session=session, user_agent="nucleus-ingest")
        self.base = self.api.base
        self.experiment = experiment

    def ensure_experiment(self) -> Outcome:
        """Create the experiment; one that exists already (409) is fine."""
        try:
            body = self.api.create_experiment(self.experiment)
        except ApiError as exc:
            if exc.status == 409:
                return Outcome("sent", "exists", 409)
            outcome = classify(exc)
            if outcome.kind == "rejected":
                return Outcome("fatal", f"cannot create experiment {self.experiment!r}: {outcome.message}",
                               outcome.status)
            return outcome
        return Outcome("sent", status=201, body=body)

    def upload(self, filename: str, data: bytes, fields: dict[str, str]) -> Outcome:
        try:
            images = self.api.upload(self.experiment, (filename, data), **fields)
        except ApiError as exc:
            if exc.status == 404:
                return Outcome("missing_experiment", f"{exc.status} {exc.code}: {exc.message}", 404)
            if exc.code == "sha256_mismatch":
                return Outcome("retry", exc.message)
            return classify(exc)
        except (ValueError, KeyError, TypeError) as exc:  # a 2xx whose body is not the upload answer
            return Outcome("retry", f"unexpected answer to an upload: {exc}")
        if len(images) != 1 or not isinstance(images[0], dict) or not images[0].get("sha256"):
            return Outcome("retry", f"unexpected answer to an upload: {str(images)[:200]}")
        return Outcome("sent", status=202, body=images[0])
