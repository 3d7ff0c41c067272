"""A new data directory and everything the service creates in it are private to the service's user:
folders 0700, files 0600 (SQLite database and its WAL files, broker folders and messages, the local
object store, the session key), whether `nucleus up` creates it or the API is started some other way."""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from testkit.api import nuclei_image
from testkit.http import Client
from testkit.pipeline import weights_overrides
from testkit.stack import EmbeddedStack


def modes(root: Path, skip: set[str] = frozenset()) -> dict[str, str]:
    """Every path under root (root included, as '.') with its permission bits, in octal."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            relative = str(path.relative_to(root))
            if relative not in skip:
                found[relative] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def not_private(found: dict[str, str], root: Path) -> dict[str, str]:
    return {path: mode for path, mode in found.items()
            if mode != (oct(0o700) if (root / path).is_dir() else oct(0o600))}


@pytest.fixture
def open_umask():
    """The usual umask (group and others may read), so nothing passes only because the test's umask was strict."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_the_api_creates_a_private_data_dir(tmp_path, use_settings, open_umask):
    from testkit.api import ApiHarness

    data_dir = tmp_path / "new" / "data"
    harness = ApiHarness(use_settings(data_dir))
    admin = harness.client("admin")
    assert admin.post("/api/v1/experiments", json={"name": "private"}).status_code == 201
    uploaded = admin.upload("private", [("a.png", nuclei_image(7))])
    assert uploaded.status_code == 202, uploaded.json
    client = harness.app.test_client()
    client.get("/login")  # the session key

    found = modes(data_dir)
    for expected in ("nucleus.db", "nucleus.db-wal", "secret_key", "objects", "broker/messages"):
        assert expected in found, (expected, sorted(found))
    assert any(path.startswith("objects/") and (data_dir / path).is_file() for path in found)
    assert any(path.startswith("broker/messages/") for path in found)  # the queued job's message
    assert not_private(found, data_dir) == {}


def test_nucleus_up_keeps_everything_private(tmp_path, open_umask):
    stack = EmbeddedStack(tmp_path / "data", **weights_overrides())
    assert oct(stat.S_IMODE(stack.data_dir.stat().st_mode)) == oct(0o755)  # made by the test, world-readable
    with stack:
        client = Client(stack.url, stack.token)
        assert client.create_experiment("private-up").status_code == 201
        path = tmp_path / "cells.png"
        path.write_bytes(nuclei_image(3))
        uploaded = client.upload("private-up", [path])
        assert uploaded.status_code == 202, uploaded.text
        assert client.wait_job(uploaded.json()["images"][0]["job_id"], timeout=180)["status"] == "done"
        found = modes(stack.data_dir, skip={"up.log"})  # the test's own log of the command
    assert {"nucleus.db", "secret_key", "objects", "broker"} <= set(found)
    assert any(path.startswith("objects/results/") for path in found)
    assert not_private(found, stack.data_dir) == {}
