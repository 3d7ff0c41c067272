"""`nucleus ingest` parts without the nucleus server: the state file, settle detection, and how the
ingester treats a server's answers (a small real HTTP server on loopback plays the API)."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from nucleus.commands.ingest import ingest
from nucleus.ingest.client import ApiClient, Backoff, parse_retry_after
from nucleus.ingest.runner import Ingester, IngestFatal
from nucleus.ingest.scanner import SettleTracker, list_images
from nucleus.ingest.state import SentState, StateError, default_state_path


# -- state -------------------------------------------------------------------------------------------
def test_default_state_path_is_in_the_state_directory_and_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    watched = tmp_path / "instrument"
    path = default_state_path(watched, "http://h:8000/", "plate-1")
    assert path.parent == tmp_path / "state" / "nucleus" / "ingest" and path.suffix == ".json"
    assert path == default_state_path(watched, "http://h:8000", "plate-1")  # a trailing slash is the same server
    others = {default_state_path(watched, "http://other:8000", "plate-1"),
              default_state_path(watched, "http://h:8000", "plate-2"),
              default_state_path(tmp_path / "elsewhere", "http://h:8000", "plate-1")}
    assert path not in others and len(others) == 3
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_path(watched, "http://h", "e").parent == tmp_path / "home/.local/state/nucleus/ingest"


def test_state_survives_reopening_and_knows_bytes_by_hash(tmp_path):
    path = tmp_path / "s.json"
    state = SentState(path, tmp_path, "http://h", "e").open()
    state.record("a/x.tif", 10, 111, "f" * 64, "sent", image_id="img1", job_id="job1")
    state.record("bad.png", 3, 222, "0" * 64, "rejected", error="400 not an image")
    state.close()
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed, not left behind

    again = SentState(path, tmp_path, "http://h", "e").open()
    assert again.unchanged("a/x.tif", 10, 111)["image_id"] == "img1"
    assert again.unchanged("a/x.tif", 10, 112) is None  # touched: look at it again
    assert again.sent_as("f" * 64) == {"relative": "a/x.tif", "image_id": "img1", "job_id": "job1"}
    assert again.sent_as("0" * 64) is None  # refused bytes were never delivered
    assert again.counts() == {"sent": 1, "rejected": 1}
    again.close()


def test_one_ingester_per_state_file(tmp_path):
    first = SentState(tmp_path / "s.json", tmp_path, "http://h", "e").open()
    with pytest.raises(StateError, match="another ingester"):
        SentState(tmp_path / "s.json", tmp_path, "http://h", "e").open()
    first.close()
    SentState(tmp_path / "s.json", tmp_path, "http://h", "e").open().close()


def test_cli_refuses_a_state_file_inside_the_watched_folder_and_a_bad_pattern(tmp_path):
    base = ["--watch", str(tmp_path), "--experiment", "e", "--server", "http://127.0.0.1:9", "--token", "t", "--once"]
    inside = CliRunner().invoke(ingest, [*base, "--state", str(tmp_path / "sub" / "state.json")])
    assert inside.exit_code == 2 and "inside the watched folder" in inside.output
    bad = CliRunner().invoke(ingest, [*base, "--pattern", "(?P<well>", "--state", str(tmp_path.parent / "s.json")])
    assert bad.exit_code == 2 and "--pattern" in bad.output


# -- folder scanning and settling ----------------------------------------------------------------------
def test_listing_finds_images_in_subfolders_in_any_case_and_skips_the_rest(tmp_path):
    for name in ["a.TIF", "b.tiff", "sub/c.png", "sub/deeper/d.JPG", "e.jpeg", "notes.txt", "f.tif.part",
                 ".hidden.tif", "._a.TIF", ".cache/g.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [f.relative for f in list_images(tmp_path)] == ["a.TIF", "b.tiff", "e.jpeg", "sub/c.png",
                                                           "sub/deeper/d.JPG"]


def test_a_file_settles_only_after_staying_unchanged_for_the_settle_time(tmp_path):
    now = [0.0]
    tracker = SettleTracker(settle=2.0, clock=lambda: now[0])
    path = tmp_path / "A01_s1_w1.tif"

    def poll():
        settled, changing = tracker.update(list_images(tmp_path))
        return [f.relative for f in settled], [f.relative for f in changing]

    path.write_bytes(b"half")
    assert poll() == ([], ["A01_s1_w1.tif"])
    now[0] = 1.9
    assert poll() == ([], ["A01_s1_w1.tif"])
    with path.open("ab") as fh:
        fh.write(b" and the rest")  # the writer went on: the clock starts again
    now[0] = 2.5
    assert poll() == ([], ["A01_s1_w1.tif"])
    now[0] = 4.4
    assert poll() == ([], ["A01_s1_w1.tif"])
    now[0] = 4.5
    assert poll() == (["A01_s1_w1.tif"], [])
    path.unlink()
    assert poll() == ([], [])


# -- the server's answers -------------------------------------------------------------------------------
class FakeApi:
    """A real HTTP server on loopback that answers uploads from a script of (status, headers) pairs,
    then 202 with the sha256 of the bytes it expects; it records when each request came."""

    def __init__(self, script: list[tuple[int, dict]], expected: bytes):
        self.script, self.sha = list(script), hashlib.sha256(expected).hexdigest()
        self.uploads: list[float] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/v1/experiments":
                    return self._send(201, {"id": 1, "name": "e", "project": "default"})
                api.uploads.append(time.monotonic())
                if api.script:
                    status, headers = api.script.pop(0)
                    return self._send(status, {"error": {"code": "scripted", "message": "scripted"}}, headers)
                self._send(202, {"images": [{"id": "img", "job_id": "job", "sha256": api.sha, "status": "queued",
                                             "duplicate": False}]})

            def _send(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _run_once(tmp_path: Path, api: FakeApi, token: str = "t") -> tuple[Ingester, SentState]:
    watched = tmp_path / "watched"
    state = SentState(tmp_path / "state.json", watched, api.url, "e").open()
    ingester = Ingester(watched, ApiClient(api.url, token, "e"), state, settle=0, once=True,
                        backoff=Backoff(initial=0.05, maximum=0.2))
    try:
        ingester.run()
    finally:
        state.close()
    return ingester, state


@pytest.fixture
def image_file(tmp_path, dsb_samples):
    (tmp_path / "watched").mkdir()
    data = dsb_samples[0].path.read_bytes()
    (tmp_path / "watched" / "A01_s1_w1.png").write_bytes(data)
    return data


def test_retry_after_is_honoured_for_429_and_503(tmp_path, image_file):
    api = FakeApi([(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"}), (502, {})], image_file)
    try:
        ingester, state = _run_once(tmp_path, api)
    finally:
        api.close()
    assert len(api.uploads) == 4
    gaps = [b - a for a, b in zip(api.uploads, api.uploads[1:])]
    assert gaps[0] >= 0.95 and gaps[1] >= 0.95, gaps  # the server asked for a second each time
    assert gaps[2] < 0.9, gaps                         # no Retry-After: the short exponential backoff
    assert state.files["A01_s1_w1.png"]["outcome"] == "sent" and ingester.totals.sent == 1


def test_a_refused_file_is_recorded_and_not_sent_again(tmp_path, image_file):
    api = FakeApi([(400, {})], image_file)
    try:
        first, state = _run_once(tmp_path, api)
        second, _ = _run_once(tmp_path, api)
    finally:
        api.close()
    assert first.totals.rejected == 1 and state.files["A01_s1_w1.png"]["outcome"] == "rejected"
    assert len(api.uploads) == 1 and second.totals.rejected == 0


def test_a_refused_token_stops_the_ingester(tmp_path, image_file):
    api = FakeApi([(401, {})], image_file)
    try:
        with pytest.raises(IngestFatal, match="token"):
            _run_once(tmp_path, api)
    finally:
        api.close()


@pytest.mark.parametrize("value, seconds", [("7", 7.0), ("100000", 600.0), ("soon", None), (None, None),
                                            ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0)])
def test_retry_after_values(value, seconds):
    from email.utils import parsedate_to_datetime

    now = parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after(value, now=now) == seconds
