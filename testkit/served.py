"""The API app (ApiHarness: SQLite, the local object store, the file-system broker) behind werkzeug's
HTTP server on a free port, for clients that speak HTTP (nucleus.client, nucleus ingest)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit.api import ApiHarness
from testkit.env import apply_settings, clear_shared_caches
from testkit.net import free_port


@contextmanager
def served_api(data_dir: Path, **settings):
    """Yields the harness with `.http_url` set; settings override the defaults (e.g. export_rate)."""
    from werkzeug.serving import make_server

    monkeypatch = pytest.MonkeyPatch()
    harness = ApiHarness(apply_settings(monkeypatch, data_dir, **settings))
    server = make_server("127.0.0.1", free_port(), harness.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    harness.http_url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield harness
    finally:
        server.shutdown()
        server.server_close()
        monkeypatch.undo()
        clear_shared_caches()
