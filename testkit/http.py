"""A small HTTP client for the API, over real sockets (requests)."""
from __future__ import annotations

import mimetypes
import time
from pathlib import Path

import requests


class Client:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()

    def _headers(self, headers: dict | None) -> dict:
        merged = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        merged.update(headers or {})
        return merged

    def request(self, method: str, path: str, headers: dict | None = None, **kwargs) -> requests.Response:
        url = path if path.startswith("http") else f"{self.base_url}/{path.lstrip('/')}"
        kwargs.setdefault("timeout", self.timeout)
        return self.session.request(method, url, headers=self._headers(headers), **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def with_token(self, token: str | None) -> "Client":
        return Client(self.base_url, token, self.timeout)

    def create_experiment(self, name: str, **fields) -> requests.Response:
        return self.post("/api/v1/experiments", json={"name": name, **fields})

    def upload(self, experiment: str, paths, **fields) -> requests.Response:
        """POST the files (paths, or (filename, bytes) pairs) as repeated `file` fields, with
        form fields such as condition, well, channel, pixel_size_um."""
        files = []
        for item in paths:
            if isinstance(item, tuple):
                filename, data = item
            else:
                filename, data = Path(item).name, Path(item).read_bytes()
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            files.append(("file", (filename, data, content_type)))
        data = {k: str(v) for k, v in fields.items() if v is not None}
        return self.post(f"/api/v1/experiments/{experiment}/images", files=files, data=data)

    def wait_job(self, job_id: str, timeout: float = 120.0, interval: float = 0.2) -> dict:
        """Poll a job until it is done or failed; return its JSON. Raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            response = self.get(f"/api/v1/jobs/{job_id}")
            if response.status_code == 200:
                body = response.json()
                if body.get("status") in ("done", "failed"):
                    return body
            time.sleep(interval)
        raise TimeoutError(f"job {job_id} not finished within {timeout:g} s (last seen: {body})")
