"""Helpers for the API and web-page tests (no tests here): a real app on a migrated database and a
real object store, tokens per role, and jobs finished the way a worker finishes them."""
from __future__ import annotations

import io
import re
import struct
import zlib
from contextlib import contextmanager

import numpy as np
from flask.testing import FlaskClient

from shared.infra.settings import Settings


class TokenClient:
    """Flask's test client with a bearer token on every request."""

    def __init__(self, client: FlaskClient, token: str | None):
        self.client, self.token = client, token

    def _headers(self, headers):
        merged = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        merged.update(headers or {})
        return merged

    def get(self, path, headers=None, **kwargs):
        return self.client.get(path, headers=self._headers(headers), **kwargs)

    def post(self, path, headers=None, **kwargs):
        return self.client.post(path, headers=self._headers(headers), **kwargs)

    def upload(self, experiment: str, files: list[tuple[str, bytes]], **fields):
        data = {k: str(v) for k, v in fields.items()}
        data["file"] = [(io.BytesIO(content), name) for name, content in files]
        return self.post(f"/api/v1/experiments/{experiment}/images", data=data, content_type="multipart/form-data")


class ApiHarness:
    def __init__(self, settings: Settings):
        from services.api import create_app
        from shared.infra.db.migrate import upgrade

        self.settings = settings
        self.url = settings.resolved_database_url
        upgrade(self.url)
        self.app = create_app(settings)
        self.app.config["TESTING"] = True
        self.store = self.app.extensions["nucleus_store"]

    @contextmanager
    def session(self):
        from shared.infra.db.session import session_scope

        with session_scope(self.url) as session:
            yield session

    def token(self, role: str, project: str | None = None, name: str = "test") -> str:
        from shared.infra.auth import create_token

        with self.session() as session:
            return create_token(session, name, role, project)

    def client(self, role: str | None = "admin", project: str | None = None, token: str | None = None) -> TokenClient:
        if token is None and role is not None:
            token = self.token(role, project)
        return TokenClient(self.app.test_client(), token)

    def finish(self, job_id: str, count: int = 3, model_version: str = "nucleus-test-00000000") -> None:
        """Record a result as a worker does (shared.infra.jobs.complete), with its files in the store."""
        from shared.infra import jobs

        labels = np.zeros((32, 32), np.uint16)
        for i in range(count):
            labels[2 + 3 * i: 4 + 3 * i, 2:4 + i] = i + 1
        keys = {name: f"results/{job_id}/{name}" for name in ("labels.tif", "overlay.png", "nuclei.csv")}
        self.store.put(keys["labels.tif"], tiff_bytes(labels))
        self.store.put(keys["overlay.png"], png_bytes(np.zeros((32, 32, 3), np.uint8)))
        self.store.put(keys["nuclei.csv"], ("label,area\n" + "".join(f"{i + 1},{4 + 2 * i}\n" for i in range(count))).encode())
        nuclei = [dict(label=i + 1, area=float(4 + 2 * i), perimeter=8.0, centroid_x=3.0, centroid_y=3.0 + 3 * i,
                       equivalent_diameter=2.5, eccentricity=0.5, solidity=1.0, mean_intensity=100.0,
                       integrated_intensity=400.0) for i in range(count)]
        areas = [n["area"] for n in nuclei]
        result = dict(image_id=self.image_of(job_id), model_version=model_version, count=count,
                      area_mean=float(np.mean(areas)) if areas else None,
                      area_median=float(np.median(areas)) if areas else None,
                      area_min=min(areas) if areas else None, area_max=max(areas) if areas else None,
                      labels_key=keys["labels.tif"], overlay_key=keys["overlay.png"],
                      nuclei_csv_key=keys["nuclei.csv"], seconds_model=0.1, seconds_total=0.2)
        assert jobs.complete(job_id, result, nuclei, url=self.url)

    def fail(self, job_id: str, reason: str) -> None:
        from shared.infra import jobs

        assert jobs.fail(job_id, reason, url=self.url)

    def image_of(self, job_id: str) -> str:
        from shared.infra.db.tables import Job

        with self.session() as session:
            return session.get(Job, job_id).image_id

    def count(self, model) -> int:
        from sqlalchemy import func, select

        with self.session() as session:
            return session.scalar(select(func.count()).select_from(model))


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def tiff_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def nuclei_image(seed: int = 0, size: int = 64) -> bytes:
    """A small grey PNG with bright blobs; `seed` makes distinct bytes."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 20, (size, size), dtype=np.uint8)
    for y, x in rng.integers(8, size - 8, (4, 2)):
        image[y - 3:y + 3, x - 3:x + 3] = 200
    return png_bytes(image)


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header declares width x height; its data is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def csrf_from(html: bytes | str) -> str:
    text = html.decode() if isinstance(html, bytes) else html
    match = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(harness, role: str = "admin", project=None):
    """A browser-like client signed in with a fresh token; returns (client, csrf)."""
    client = harness.app.test_client()
    token = harness.token(role, project)
    page = client.get("/login")
    response = client.post("/login", data={"token": token, "csrf_token": csrf_from(page.data), "next": "/"})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    return client, csrf_from(client.get("/").data)
