"""What `nucleus up` shows a person at a terminal: readable lines from every process, no Celery or gunicorn
banners; JSON lines when asked or when nobody is watching."""
from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import time

from nucleus.commands.up import child_commands, child_environment, wants_json
from shared.infra.logs import JsonFormatter, PlainFormatter, bind_job
from testkit.env import service_env
from testkit.net import free_port
from testkit.pipeline import weights_overrides
from testkit.stack import NUCLEUS

READABLE = re.compile(r"^\d\d:\d\d:\d\d [a-z]+(-\d+)?\[\d+\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S")


def _record(name="services.worker", level=logging.INFO, msg="model loaded", **extra):
    record = logging.LogRecord(name, level, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_readable_and_json_lines_carry_the_same_fields():
    record = _record(model_version="nucleus-x-1", note="two words")
    with bind_job("job-7"):
        plain = PlainFormatter().format(record)
        entry = json.loads(JsonFormatter().format(record))
    assert READABLE.match(plain), plain
    assert plain.endswith('model loaded job=job-7 model_version=nucleus-x-1 note="two words"')
    assert (entry["msg"], entry["job_id"], entry["model_version"]) == ("model loaded", "job-7", "nucleus-x-1")
    warning = PlainFormatter().format(_record("py.warnings", logging.WARNING, "a.py:3: Warning: one\n\ntwo\n"))
    assert "\n" not in warning and warning.endswith("WARNING py.warnings: a.py:3: Warning: one two")


def test_the_log_format_follows_the_option_then_the_terminal(monkeypatch):
    class Stdout:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("NUCLEUS_LOG_JSON", raising=False)
    monkeypatch.setattr("sys.stdout", Stdout(True))
    assert (wants_json(None), wants_json("json"), wants_json("text")) == (False, True, False)
    monkeypatch.setattr("sys.stdout", Stdout(False))
    assert (wants_json(None), wants_json("text")) == (True, False)
    monkeypatch.setenv("NUCLEUS_LOG_JSON", "0")
    assert wants_json(None) is False


def test_third_party_start_up_banners_are_turned_off():
    api = child_commands(8000, "127.0.0.1", 2)["api"]
    assert api[api.index("--log-level") + 1] == "warning"
    assert child_environment()["CELERY_QUIET"] == "1"


def test_a_terminal_sees_readable_lines_and_no_banner(tmp_path):
    """`nucleus up` on a pseudo-terminal until its worker is ready: every line is readable, none is a banner."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(NUCLEUS), "up", "--port", str(free_port()), "--data-dir", str(tmp_path / "d")],
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, start_new_session=True,
                               env=service_env(tmp_path / "d", **weights_overrides()))
    os.close(terminal)
    output, deadline = b"", time.monotonic() + 240
    try:
        while time.monotonic() < deadline and not re.search(rb"segment-1@\S+ ready", output):
            if select.select([controller], [], [], 1.0)[0]:
                try:
                    output += os.read(controller, 65536)
                except OSError:
                    break
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        os.close(controller)
    lines = [line for line in output.decode(errors="replace").replace("\r", "").splitlines() if line.strip()]
    assert any(re.search(r"segment-1@\S+ ready", line) for line in lines), "\n".join(lines)
    own = ("nucleus is starting at http://", "data directory:", "first admin token", "nuc_")
    strange = [line for line in lines if not READABLE.match(line) and not line.startswith(own)]
    assert strange == [], "\n".join(strange)
    assert not any(line.lstrip().startswith("{") for line in lines)
    assert any(re.match(r"^\S+ worker\[\d+\] INFO +model loaded", line) for line in lines)
