"""`nucleus up` as the user runs it: a subprocess in its own session, on a free port and a fresh
data directory, with an admin token from `nucleus token create`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from testkit.env import service_env
from testkit.net import free_port
from testkit.wait import wait_for

NUCLEUS = Path(sys.executable).parent / "nucleus"


def nucleus_command(*args: str, data_dir: Path, env: dict | None = None, timeout: float = 120,
                    check: bool = True) -> subprocess.CompletedProcess:
    """Run the `nucleus` CLI once and return its completed process (stdout/stderr as text)."""
    result = subprocess.run([str(NUCLEUS), *args], capture_output=True, text=True, timeout=timeout,
                            cwd=data_dir, env=env or service_env(data_dir), stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"nucleus {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


class EmbeddedStack:
    def __init__(self, data_dir: Path, port: int | None = None, startup_timeout: float = 180, **settings):
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "up.log"
        self.env = service_env(self.data_dir, **settings)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.token: str | None = None

    def start(self) -> "EmbeddedStack":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(NUCLEUS), "up", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.data_dir, env=self.env,
            start_new_session=True)  # its own process group: stop() reaches every child
        log.close()
        try:
            wait_for(self._healthy, timeout=self.startup_timeout, interval=0.5, message=f"{self.url}/healthz")
        except BaseException:
            self.stop()
            raise AssertionError(f"nucleus up did not become healthy; log tail:\n{self.log_tail()}") from None
        if self.token is None:
            self.token = self.create_token("tests", "admin")
        return self

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"nucleus up exited with {self.process.returncode}:\n{self.log_tail()}")
        return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def create_token(self, name: str, role: str, project: str | None = None) -> str:
        args = ["token", "create", "--name", name, "--role", role, "--data-dir", str(self.data_dir)]
        if project:
            args += ["--project", project]
        lines = nucleus_command(*args, data_dir=self.data_dir, env=self.env).stdout.strip().splitlines()
        if not lines:
            raise AssertionError("nucleus token create printed nothing")
        return lines[-1].strip()

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM the whole process group, SIGKILL what is left after `timeout`; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # stragglers, if any, never outlive the test module
        if self.process.poll() is None:
            self.process.wait(10)
        return self.process.returncode

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def group_pids(self) -> list[int]:
        """Processes still in the stack's session (to check nothing is left running)."""
        out = subprocess.run(["ps", "-o", "pid=", "-s", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> "EmbeddedStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
