"""`nucleus ingest` as an instrument PC runs it, against a real `nucleus up` on loopback: files
written in several goes, copies, restarts of the ingester, and the server going away mid-run."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testkit import data
from testkit.http import Client
from testkit.net import free_port
from testkit.stack import NUCLEUS, EmbeddedStack
from testkit.wait import wait_for


class IngestProcess:
    """`nucleus ingest` as a subprocess with its own log, reading its progress from its state file."""

    def __init__(self, tmp_path: Path, watched: Path, server: str, token: str, experiment: str,
                 *extra: str, state: Path | None = None):
        self.state = state or tmp_path / f"{experiment}-state.json"
        self.log_path = tmp_path / f"{experiment}-ingest-{time.monotonic_ns()}.log"
        self.args = [str(NUCLEUS), "ingest", "--watch", str(watched), "--experiment", experiment, "--server", server,
                     "--token", token, "--state", str(self.state), *extra]
        self.env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
        self.process: subprocess.Popen | None = None

    def start(self) -> "IngestProcess":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env)
        return self

    def run_once(self, timeout: float = 60) -> int:
        self.args.append("--once")
        self.start()
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def entries(self) -> dict[str, dict]:
        try:
            return json.loads(self.state.read_text())["files"]
        except FileNotFoundError:
            return {}

    def wait_delivered(self, names: list[str], timeout: float = 40) -> dict[str, dict]:
        def delivered():
            if self.process.poll() is not None:
                raise AssertionError(f"the ingester exited with {self.process.returncode}:\n{self.log()}")
            entries = self.entries()
            return all(entries.get(n, {}).get("outcome") in ("sent", "duplicate") for n in names) and entries
        try:
            return wait_for(delivered, timeout=timeout, interval=0.2, message=f"{names} delivered")
        except TimeoutError:
            raise AssertionError(f"not delivered in {timeout} s; ingester log:\n{self.log()}") from None


def server_images(client: Client, experiment: str) -> list[dict]:
    """Every image of the experiment on the server, with its sha256 and metadata."""
    response = client.get(f"/api/v1/experiments/{experiment}/results", params={"per_page": 1000})
    assert response.status_code == 200, response.text
    images = []
    for row in response.json()["results"]:
        image = client.get(f"/api/v1/images/{row['image_id']}")
        assert image.status_code == 200, image.text
        images.append(image.json())
    return images


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    """Six distinct real DSB2018 images (PNG bytes)."""
    return [s.path.read_bytes() for s in data.pick("fluorescence", 256, 256, n=6)]


@pytest.fixture
def watched(tmp_path) -> Path:
    folder = tmp_path / "instrument"
    folder.mkdir()
    return folder


def test_a_file_written_in_several_goes_is_sent_once_and_complete(tmp_path, watched, embedded_stack, images):
    client = Client(embedded_stack.url, embedded_stack.token)
    ingester = IngestProcess(tmp_path, watched, embedded_stack.url, embedded_stack.token, "ingest-midwrite",
                             "--settle", "1.5").start()
    try:
        target = watched / "Plate1" / "Plate1_B02_s1_w1.png"
        target.parent.mkdir()
        whole = images[0]
        third = len(whole) // 3
        with target.open("wb") as fh:  # an instrument writing slowly, with pauses shorter than --settle
            for part in (whole[:third], whole[third:2 * third], whole[2 * third:]):
                fh.write(part)
                fh.flush()
                time.sleep(0.7)
        (watched / "r03c04f02p01-ch2sk1fk1fl1.tiff").write_bytes(images[1])  # not a TIFF inside: still an image
        entries = ingester.wait_delivered(["Plate1/Plate1_B02_s1_w1.png", "r03c04f02p01-ch2sk1fk1fl1.tiff"])
    finally:
        assert ingester.stop() == 0, ingester.log()

    on_server = {image["filename"]: image for image in server_images(client, "ingest-midwrite")}
    assert set(on_server) == {"Plate1_B02_s1_w1.png", "r03c04f02p01-ch2sk1fk1fl1.tiff"}
    assert on_server["Plate1_B02_s1_w1.png"]["sha256"] == sha(whole)  # the complete file, never a part of it
    assert (on_server["Plate1_B02_s1_w1.png"]["plate"], on_server["Plate1_B02_s1_w1.png"]["well"],
            on_server["Plate1_B02_s1_w1.png"]["site"]) == ("Plate1", "B02", "1")
    assert (on_server["r03c04f02p01-ch2sk1fk1fl1.tiff"]["well"], on_server["r03c04f02p01-ch2sk1fk1fl1.tiff"]["site"]
            ) == ("C04", "2")
    assert entries["Plate1/Plate1_B02_s1_w1.png"]["sha256"] == sha(whole)
    assert ingester.log().count("sent Plate1/Plate1_B02_s1_w1.png") == 1
    assert " ERROR " not in ingester.log() and " WARNING " not in ingester.log()


def test_a_copy_of_a_file_becomes_one_image(tmp_path, watched, embedded_stack, images):
    client = Client(embedded_stack.url, embedded_stack.token)
    (watched / "A01_s1_w1.png").write_bytes(images[2])
    (watched / "again").mkdir()
    (watched / "again" / "A01_s1_w1 copy.png").write_bytes(images[2])
    first = IngestProcess(tmp_path, watched, embedded_stack.url, embedded_stack.token, "ingest-dup", "--settle", "0.3")
    assert first.run_once() == 0, first.log()
    outcomes = {name: entry["outcome"] for name, entry in first.entries().items()}
    assert sorted(outcomes.values()) == ["duplicate", "sent"], outcomes
    assert "duplicate" in first.log() and "not sent" in first.log()  # recognised locally by its sha256

    # A second ingester knows nothing; the server recognises the bytes and answers duplicate: still success.
    fresh = IngestProcess(tmp_path, watched, embedded_stack.url, embedded_stack.token, "ingest-dup", "--settle", "0.3",
                          state=tmp_path / "another-state.json")
    assert fresh.run_once() == 0, fresh.log()
    assert "the server already has these bytes" in fresh.log()
    assert [image["sha256"] for image in server_images(client, "ingest-dup")] == [sha(images[2])]


def test_a_restarted_ingester_resends_nothing(tmp_path, watched, embedded_stack, images):
    client = Client(embedded_stack.url, embedded_stack.token)
    for i in range(2):
        (watched / f"r01c0{i + 1}f01p01-ch1.png").write_bytes(images[i])
    first = IngestProcess(tmp_path, watched, embedded_stack.url, embedded_stack.token, "ingest-restart",
                          "--settle", "0.3")
    assert first.run_once() == 0, first.log()
    assert first.log().count(" sent ") == 2

    (watched / "r01c03f01p01-ch1.png").write_bytes(images[3])  # arrives while the ingester is not running
    second = IngestProcess(tmp_path, watched, embedded_stack.url, embedded_stack.token, "ingest-restart",
                           "--settle", "0.3", state=first.state)
    assert second.run_once() == 0, second.log()
    assert second.log().count(" sent ") == 1 and "sent r01c03f01p01-ch1.png" in second.log()
    assert "INFO duplicate " not in second.log()  # the others were not even offered to the server

    third = IngestProcess(tmp_path, watched, embedded_stack.url, embedded_stack.token, "ingest-restart",
                          "--settle", "0.3", state=first.state)
    assert third.run_once() == 0, third.log()
    assert "0 sent, 0 duplicate, 0 rejected" in third.log()
    assert sorted(i["well"] for i in server_images(client, "ingest-restart")) == ["A01", "A02", "A03"]


def test_the_default_state_file_lives_outside_the_watched_folder(tmp_path, watched, embedded_stack, images):
    (watched / "one.png").write_bytes(images[4])
    ingester = IngestProcess(tmp_path, watched, embedded_stack.url, embedded_stack.token, "ingest-xdg",
                             "--settle", "0.2")
    ingester.args.remove("--state")
    ingester.args.remove(str(ingester.state))
    assert ingester.run_once() == 0, ingester.log()
    states = list((tmp_path / "xdg-state" / "nucleus" / "ingest").glob("*.json"))
    assert len(states) == 1 and "one.png" in json.loads(states[0].read_text())["files"]
    assert sorted(p.name for p in watched.rglob("*")) == ["one.png"]


def test_a_wrong_token_or_a_corrupt_file_is_reported(tmp_path, watched, embedded_stack, images):
    (watched / "broken.png").write_bytes(images[5][:200])  # a truncated PNG: the server refuses it
    wrong = IngestProcess(tmp_path, watched, embedded_stack.url, "nuc_not-a-token", "ingest-errors", "--settle", "0")
    assert wrong.run_once() == 1 and "refused the token" in wrong.log()

    refused = IngestProcess(tmp_path, watched, embedded_stack.url, embedded_stack.token, "ingest-errors",
                            "--settle", "0.2")
    assert refused.run_once() == 1
    assert "rejected broken.png: 400" in refused.log(), refused.log()
    assert refused.entries()["broken.png"]["outcome"] == "rejected"


def test_the_server_stopped_and_restarted_during_the_run(tmp_path, watched, images):
    """Every file ends up on the server exactly once, though the server is away for part of the run."""
    stack = EmbeddedStack(tmp_path / "server", port=free_port()).start()
    ingester = None
    try:
        client = Client(stack.url, stack.token)
        ingester = IngestProcess(tmp_path, watched, stack.url, stack.token, "ingest-outage", "--settle", "0.5",
                                 "--max-backoff", "1").start()
        names = [f"Plate9_{well}_s1_w1.png" for well in ("A01", "A02", "A03", "A04", "A05")]
        for name, image in zip(names[:2], images):
            (watched / name).write_bytes(image)
        ingester.wait_delivered(names[:2])

        assert stack.stop() == 0  # SIGTERM: the whole server goes away
        for name, image in zip(names[2:4], images[2:4]):
            (watched / name).write_bytes(image)
        shutil.copy(watched / names[0], watched / "copy-of-A01.png")
        wait_for(lambda: ingester.log().count("retrying") >= 2, timeout=30, message="the ingester retrying")
        assert "sent Plate9_A03" not in ingester.log()

        stack.start()  # same data directory and port; the token is still valid
        (watched / names[4]).write_bytes(images[4])
        entries = ingester.wait_delivered([*names, "copy-of-A01.png"], timeout=60)
        on_server = [image["sha256"] for image in server_images(client, "ingest-outage")]
    finally:
        code = ingester.stop() if ingester else None
        stack.stop()
    assert code == 0, ingester.log()

    assert sorted(on_server) == sorted(sha(image) for image in images[:5])  # all five, each exactly once
    log = ingester.log()
    assert all(log.count(f"sent {name}") == 1 for name in names), log
    assert entries["copy-of-A01.png"]["outcome"] == "duplicate"

