"""A Python client of the nucleus API (/api/v1): experiments, uploads, results, labels, training runs
and models, over plain HTTP with `requests`.

    from nucleus.client import Client

    api = Client("http://127.0.0.1:8000")          # token from $NUCLEUS_TOKEN (or token=..., token_file=...)
    api.create_experiment("screen-7", exist_ok=True)
    image = api.upload("screen-7", "A01_s1.ome.tif", channel="Hoechst", well="A01", condition="dmso")[0]
    result = api.wait_for_result(image["id"])
    print(result["count"], api.download(image["id"], "nuclei.csv").decode())

Every answer is the server's JSON as a dict (or bytes for files). A refusal raises `ApiError` carrying
the status and the server's `error.code` and `error.message`; an unreachable server raises
`ServerUnreachable`. A 429 or 503 is retried after the server's Retry-After (at most `retries` times,
each wait capped at `max_wait` seconds) before it is raised; every other refusal is raised at once.

It is a client only: it imports nothing from the server's packages.
"""
from __future__ import annotations

import email.utils
import hashlib
import mimetypes
import os
import time
from pathlib import Path
from typing import Any, Iterator, Union
from urllib.parse import quote

import requests

__all__ = ["Client", "ApiError", "ServerUnreachable", "parse_retry_after", "read_token"]

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0          # an upload is decoded completely before the server answers
RETRY_AFTER_CAP = 600.0
WAITED_STATUSES = (429, 503)  # the server says when to come back
TOKEN_ENV = "NUCLEUS_TOKEN"
# Files the server keeps per result (GET /api/v1/images/<id>/<name>)
ARTIFACTS = ("labels.tif", "overlay.png", "nuclei.csv", "RoiSet.zip", "nuclei.geojson", "labels.ome.tif")

FileLike = Union[str, Path, bytes, tuple]  # a path, raw bytes, or (filename, bytes)


class ApiError(Exception):
    """The server refused a request: `status` (HTTP), `code` and `message` (its `error` object),
    `retry_after` (seconds, when it said)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class ServerUnreachable(ApiError):
    """No answer: connection refused or reset, a timeout (status 0)."""

    def __init__(self, message: str):
        super().__init__(0, "unreachable", message)


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


def read_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The token given, else the first line of `token_file`, else $NUCLEUS_TOKEN; None when none is set."""
    if token:
        return token.strip()
    if token_file is not None:
        text = Path(token_file).read_text().strip()
        if not text:
            raise ValueError(f"the token file {token_file} is empty")
        return text.splitlines()[0].strip()
    return (os.environ.get(TOKEN_ENV) or "").strip() or None


def error_of(response: requests.Response) -> ApiError:
    """The ApiError a refusal stands for, with the server's own code and message."""
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    try:
        error = response.json().get("error") or {}
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
    except (ValueError, AttributeError):
        code, message = "", ""
    if not message:
        message = f"{response.reason or ''} {response.text[:200]}".strip()
    return ApiError(response.status_code, code or f"http_{response.status_code}", message, retry_after)


class Client:
    """One server, one token. `retries`: how many times a 429/503 is waited out before ApiError is raised."""

    def __init__(self, server: str, token: str | None = None, *, token_file: str | Path | None = None,
                 retries: int = 3, max_wait: float = 60.0, timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
                 session: requests.Session | None = None, user_agent: str = "nucleus-client"):
        token = read_token(token, token_file)
        if not token:
            raise ValueError(f"no token: pass token= or token_file=, or set ${TOKEN_ENV}")
        self.server = server.rstrip("/")
        self.base = self.server + "/api/v1"
        self.retries, self.max_wait, self.timeout = retries, max_wait, timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = user_agent

    # -- plumbing -------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One API call (path under /api/v1); 2xx returned, anything else raised as ApiError."""
        url = self.base + path
        attempt = 0
        while True:
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.Timeout:
                raise ServerUnreachable(f"{self.server} did not answer in time") from None
            except requests.RequestException as exc:
                raise ServerUnreachable(f"cannot reach {self.server}: {_short(exc)}") from None
            if response.status_code < 400:
                return response
            error = error_of(response)
            if response.status_code not in WAITED_STATUSES or attempt >= self.retries:
                raise error
            attempt += 1
            wait = error.retry_after if error.retry_after is not None else min(2.0 ** attempt, self.max_wait)
            time.sleep(min(wait, self.max_wait))

    def _json(self, method: str, path: str, **kwargs) -> dict:
        return self.request(method, path, **kwargs).json()

    def _pages(self, path: str, key: str, params: dict, per_page: int) -> Iterator[dict]:
        page = 1
        while True:
            body = self._json("GET", path, params={**params, "page": page, "per_page": per_page})
            yield from body[key]
            if page * body.get("per_page", per_page) >= body.get("total", 0) or not body[key]:
                return
            page += 1

    # -- experiments ----------------------------------------------------------------------------------
    def experiments(self, page: int = 1, per_page: int = 50) -> dict:
        """A page: {"experiments": [...], "total", "page", "per_page"}."""
        return self._json("GET", "/experiments", params={"page": page, "per_page": per_page})

    def iter_experiments(self, per_page: int = 200) -> Iterator[dict]:
        return self._pages("/experiments", "experiments", {}, per_page)

    def experiment(self, name: str) -> dict:
        return self._json("GET", f"/experiments/{_q(name)}")

    def create_experiment(self, name: str, project: str | None = None, exist_ok: bool = False) -> dict:
        """Create an experiment (in `project`, default: the token's, else `default`). With exist_ok an
        existing one is returned instead of the 409."""
        body = {"name": name, **({"project": project} if project else {})}
        try:
            return self._json("POST", "/experiments", json=body)
        except ApiError as exc:
            if exist_ok and exc.status == 409:
                return self.experiment(name)
            raise

    # -- images and results ---------------------------------------------------------------------------
    def upload(self, experiment: str, files: FileLike | list[FileLike], *, channel: str | int | None = None,
               condition: str | None = None, well: str | None = None, plate: str | None = None,
               site: str | int | None = None, pixel_size_um: float | None = None, **metadata: Any) -> list[dict]:
        """Upload one or more images (paths, bytes or (filename, bytes)) with their metadata; returns the
        server's `images` list ({"id", "job_id", "sha256", "status", "duplicate"} each). `channel` is the
        nuclear channel by name or index; other keyword arguments are kept as free metadata."""
        fields = {"channel": channel, "condition": condition, "well": well, "plate": plate, "site": site,
                  "pixel_size_um": pixel_size_um, **metadata}
        data = {k: str(v) for k, v in fields.items() if v is not None}
        parts = [_file_part(f) for f in (files if isinstance(files, list) else [files])]
        images = self._json("POST", f"/experiments/{_q(experiment)}/images",
                            files=[("file", part) for part in parts], data=data)["images"]
        for (name, content, _), image in zip(parts, images):
            if image.get("sha256") not in (None, hashlib.sha256(content).hexdigest()):
                raise ApiError(0, "sha256_mismatch", f"the server stored other bytes than {name!r} holds")
        return images

    def image(self, image_id: str) -> dict:
        return self._json("GET", f"/images/{_q(image_id)}")

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{_q(job_id)}")

    def result(self, image_id: str, version: str | None = None) -> dict:
        """The image's newest result (or the newest by `version`); ApiError 409 while it has none."""
        return self._json("GET", f"/images/{_q(image_id)}/result", params={"version": version} if version else None)

    def wait_for_result(self, image_id: str, timeout: float = 600.0, interval: float = 1.0) -> dict:
        """Poll until the image has a result; ApiError when its job failed, TimeoutError past `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.result(image_id)
            except ApiError as exc:
                if exc.status != 409 or exc.code == "job_failed":
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"image {image_id} has no result after {timeout:.0f} s")
            time.sleep(interval)

    def results(self, experiment: str, page: int = 1, per_page: int = 50, **filters: Any) -> dict:
        """A page of result rows; filters: condition, well, status, created_from, created_to, sort, version."""
        return self._json("GET", f"/experiments/{_q(experiment)}/results",
                          params={**_present(filters), "page": page, "per_page": per_page})

    def iter_results(self, experiment: str, per_page: int = 500, **filters: Any) -> Iterator[dict]:
        return self._pages(f"/experiments/{_q(experiment)}/results", "results", _present(filters), per_page)

    def table(self, experiment: str, name: str = "nuclei.csv", **filters: Any) -> bytes:
        """An experiment's table or archive: nuclei.csv, nuclei.parquet, archive.zip, or results.csv /
        results.parquet (every result row)."""
        if name.startswith("results."):
            filters["format"] = name.split(".", 1)[1]
            name = "results"
        return self.request("GET", f"/experiments/{_q(experiment)}/{name}", params=_present(filters)).content

    def download(self, image_id: str, artifact: str = "labels.tif") -> bytes:
        """One of a result's files: labels.tif, overlay.png, nuclei.csv, RoiSet.zip, nuclei.geojson, labels.ome.tif."""
        if artifact not in ARTIFACTS:
            raise ValueError(f"artifact is one of {', '.join(ARTIFACTS)}")
        return self.request("GET", f"/images/{_q(image_id)}/{artifact}").content

    def resegment(self, experiment: str, version: str | None = None, **filters: Any) -> dict:
        return self._json("POST", f"/experiments/{_q(experiment)}/resegment",
                          json=_present({"version": version, **filters}))

    # -- labels ---------------------------------------------------------------------------------------
    def upload_labels(self, image_id: str, file: FileLike) -> dict:
        """Attach a label image (16-bit PNG/TIFF, RoiSet.zip, QuPath GeoJSON or a zip of masks) to an image."""
        return self._json("POST", f"/images/{_q(image_id)}/labels", files=[("file", _file_part(file))])

    def labels(self, image_id: str) -> dict:
        return self._json("GET", f"/images/{_q(image_id)}/labels")

    def experiment_labels(self, experiment: str, page: int = 1, per_page: int = 50) -> dict:
        return self._json("GET", f"/experiments/{_q(experiment)}/labels", params={"page": page, "per_page": per_page})

    # -- training and models --------------------------------------------------------------------------
    def start_training(self, epochs: int = 1, force_promote: bool = False, project: str | None = None) -> str:
        """Queue a training run (admin); returns its id."""
        body = {"epochs": epochs, "force_promote": force_promote, **({"project": project} if project else {})}
        return self._json("POST", "/training-runs", json=body)["id"]

    def training_run(self, run_id: str) -> dict:
        """{"status", "progress", "metrics", "version", "promoted", ...}."""
        return self._json("GET", f"/training-runs/{_q(run_id)}")

    def training_runs(self, page: int = 1, per_page: int = 50) -> dict:
        return self._json("GET", "/training-runs", params={"page": page, "per_page": per_page})

    def wait_for_training(self, run_id: str, timeout: float = 3600.0, interval: float = 5.0) -> dict:
        """Poll until the run is done or failed; returns its last state."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.training_run(run_id)
            if run["status"] in ("done", "failed"):
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(f"training run {run_id} still {run['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def models(self, project: str | None = None, page: int = 1, per_page: int = 50) -> dict:
        """Model versions, newest first; `active` marks the project's active one."""
        return self._json("GET", "/models", params=_present({"project": project, "page": page, "per_page": per_page}))

    def activate_model(self, version: str, project: str | None = None) -> dict:
        return self._json("POST", f"/models/{_q(version)}/activate", json=_present({"project": project}))

    def openapi(self) -> dict:
        return self._json("GET", "/openapi.json")


def _q(part: str) -> str:
    return quote(str(part), safe="")


def _present(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _file_part(file: FileLike) -> tuple[str, bytes, str]:
    if isinstance(file, tuple):
        name, content = file[0], file[1]
    elif isinstance(file, (bytes, bytearray)):
        name, content = "image", bytes(file)
    else:
        path = Path(file)
        name, content = path.name, path.read_bytes()
    return name, content, mimetypes.guess_type(name)[0] or "application/octet-stream"


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Remote end closed", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return text[:160]
