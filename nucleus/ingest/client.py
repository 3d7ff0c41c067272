"""The two API calls the ingester makes, each answer sorted into what to do next.

- `sent`:     2xx; `duplicate` is true when the server already had these bytes in the experiment
- `rejected`: a 4xx about this file (not an image, too large...): retrying cannot help
- `retry`:    connection refused or reset, a timeout, 5xx, 408 or 429 (with `retry_after` when the
              server sent Retry-After)
- `fatal`:    401/403 (the token), or the experiment cannot be created: nothing can be sent
"""
from __future__ import annotations

import email.utils
import hashlib
import mimetypes
import random
import time
from dataclasses import dataclass, field

import requests

RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0  # the server decodes the whole image before it answers
RETRY_AFTER_CAP = 600.0


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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - (time.time() if now is None else now)), RETRY_AFTER_CAP)


def error_message(response: requests.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return f"{response.status_code} {error.get('code', '')}: {error.get('message', '')}".strip()
    except (ValueError, AttributeError):
        return f"{response.status_code} {response.reason or ''} {response.text[:200]}".strip()


def classify(response: requests.Response) -> Outcome:
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json()
        except ValueError:
            return Outcome("retry", f"{status} with a body that is not JSON", status)
        return Outcome("sent", status=status, body=body if isinstance(body, dict) else {})
    message = error_message(response)
    if status in RETRY_STATUSES:
        return Outcome("retry", message, status, parse_retry_after(response.headers.get("Retry-After")))
    if status in (401, 403):
        return Outcome("fatal", f"the server refused the token ({message})", status)
    return Outcome("rejected", message, status)


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
    def __init__(self, server: str, token: str, experiment: str, session: requests.Session | None = None):
        self.base = server.rstrip("/") + "/api/v1"
        self.experiment = experiment
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = "nucleus-ingest"

    def _call(self, method: str, url: str, **kwargs) -> requests.Response | Outcome:
        try:
            return self.session.request(method, url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs)
        except requests.ConnectionError as exc:
            return Outcome("retry", f"cannot reach the server ({_short(exc)})")
        except requests.Timeout:
            return Outcome("retry", "the server did not answer in time")
        except requests.RequestException as exc:
            return Outcome("retry", f"request failed ({_short(exc)})")

    def ensure_experiment(self) -> Outcome:
        """Create the experiment; one that exists already (409) is fine."""
        answer = self._call("POST", f"{self.base}/experiments", json={"name": self.experiment})
        if isinstance(answer, Outcome):
            return answer
        if answer.status_code == 409:
            return Outcome("sent", "exists", 409)
        outcome = classify(answer)
        if outcome.kind == "rejected":
            return Outcome("fatal", f"cannot create experiment {self.experiment!r}: {outcome.message}", outcome.status)
        return outcome

    def upload(self, filename: str, data: bytes, fields: dict[str, str]) -> Outcome:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        url = f"{self.base}/experiments/{requests.utils.quote(self.experiment, safe='')}/images"
        answer = self._call("POST", url, files=[("file", (filename, data, content_type))], data=fields)
        if isinstance(answer, Outcome):
            return answer
        if answer.status_code == 404:
            return Outcome("missing_experiment", error_message(answer), 404)
        outcome = classify(answer)
        if outcome.kind != "sent":
            return outcome
        images = outcome.body.get("images") or []
        if len(images) != 1 or not isinstance(images[0], dict):
            return Outcome("retry", f"unexpected answer to an upload: {str(outcome.body)[:200]}", outcome.status)
        expected = hashlib.sha256(data).hexdigest()
        if images[0].get("sha256") != expected:
            return Outcome("retry", f"the server stored sha256 {images[0].get('sha256')}, not {expected}",
                           outcome.status)
        return Outcome("sent", status=outcome.status, body=images[0])


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Remote end closed", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return text[:160]
