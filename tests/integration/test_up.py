"""`nucleus up`: one foreground command runs API, workers, trainer and sweeper; replaces a killed
worker within seconds; SIGTERM leaves nothing running."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from testkit.http import Client
from testkit.pipeline import weights_overrides
from testkit.stack import EmbeddedStack
from testkit.wait import wait_for


def session_processes(stack: EmbeddedStack) -> dict[int, str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(stack.process.pid)], capture_output=True,
                         text=True).stdout
    return {int(pid): args for pid, _, args in (line.strip().partition(" ") for line in out.splitlines())}


def segment_workers(stack: EmbeddedStack) -> set[int]:
    return {pid for pid, args in session_processes(stack).items() if "services.worker.app worker" in args}


@pytest.fixture
def stack(tmp_path):
    stack = EmbeddedStack(tmp_path / "data", worker_processes=2, **weights_overrides())
    stack.start()
    yield stack
    stack.stop()


def test_up_runs_everything_restarts_a_killed_worker_and_stops_cleanly(stack, dsb_samples):
    log = stack.log_tail(400)
    assert stack.url in log
    first_token = next(line.strip() for line in log.splitlines() if line.startswith("nuc_"))
    processes = session_processes(stack)
    assert len(segment_workers(stack)) == 2
    assert any("services.trainer.app worker" in args for args in processes.values())
    assert any("services.sweeper" in args for args in processes.values())
    assert any("gunicorn" in args for args in processes.values())
    assert Client(stack.url, first_token).get("/api/v1/experiments").status_code == 200

    victim = min(segment_workers(stack))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(segment_workers(stack)) == 2 and victim not in segment_workers(stack), timeout=15,
             interval=0.2, message="killed worker replaced")

    client = Client(stack.url, stack.token)
    assert client.create_experiment("after-kill").status_code == 201
    uploaded = client.upload("after-kill", [dsb_samples[0].path])
    assert uploaded.status_code == 202, uploaded.text
    assert client.wait_job(uploaded.json()["images"][0]["job_id"], timeout=120)["status"] == "done"

    pids = set(session_processes(stack)) - {stack.process.pid}
    stack.process.send_signal(signal.SIGTERM)  # the supervisor alone: it must stop its children itself
    assert stack.process.wait(30) == 0
    leftovers = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and "zombie" not in
                 open(f"/proc/{pid}/status").read()]
    assert leftovers == [] and stack.group_pids() == []


def start_and_stop(data_dir) -> list[str]:
    """Run `nucleus up` until it has printed its start-up lines, then SIGTERM it; return its stdout lines."""
    from testkit.env import service_env
    from testkit.net import free_port
    from testkit.stack import NUCLEUS

    process = subprocess.Popen([str(NUCLEUS), "up", "--port", str(free_port()), "--data-dir", str(data_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=service_env(data_dir, **weights_overrides()), start_new_session=True)
    lines = []
    for line in process.stdout:
        lines.append(line.strip())
        if line.startswith("data directory:"):
            break
    process.send_signal(signal.SIGTERM)  # the token, if any, was printed in the same flush; read to the end
    lines += [line.strip() for line in process.stdout]
    assert process.wait(30) == 0
    return lines


def test_only_a_new_data_dir_prints_a_first_admin_token(tmp_path):
    first = start_and_stop(tmp_path / "data")
    assert any("http://127.0.0.1:" in line for line in first)
    assert sum(line.startswith("nuc_") for line in first) == 1
    second = start_and_stop(tmp_path / "data")
    assert not any(line.startswith("nuc_") for line in second)
