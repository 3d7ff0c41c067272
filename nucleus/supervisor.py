"""A small foreground process supervisor for `nucleus up`.

Each child runs in its own process group (same session), so stopping a child reaches its own
children too (gunicorn's workers). A child that exits is restarted, quickly the first time and with
growing pauses if it keeps dying. On stop: SIGTERM to every group, SIGKILL after a grace period.
Children also get SIGTERM from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("nucleus.up")

PR_SET_PDEATHSIG = 1
STABLE_AFTER_SECONDS = 30.0
MAX_RESTART_DELAY = 30.0


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - not Linux: the supervisor's own signal handling still stops children
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None
    restarts: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


@dataclass
class Supervisor:
    env: dict[str, str]
    cwd: str | None = None
    grace_seconds: float = 10.0
    poll_seconds: float = 0.25
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def add(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv)
        self.children.append(child)
        return child

    def _start(self, child: Child) -> None:
        # children log to stderr; their stdout (Celery's banner) goes there too, keeping ours for the URL and token
        child.process = subprocess.Popen(child.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=sys.stderr.fileno(), process_group=0, preexec_fn=_die_with_parent)
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started", extra={"child": child.name, "pid": child.pid})

    def start_all(self) -> None:
        for child in self.children:
            self._start(child)

    def check(self) -> None:
        """Restart children that exited (after their back-off pause)."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at and not self.stopping:
                    child.restarts += 1
                    self._start(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            ran = now - child.started_at
            child.quick_failures = child.quick_failures + 1 if ran < STABLE_AFTER_SECONDS else 0
            delay = min(MAX_RESTART_DELAY, 0.5 * 2 ** max(0, child.quick_failures - 1))
            child.restart_at = now + delay
            log.warning("exited; restarting", extra={"child": child.name, "pid": child.pid, "returncode": code,
                                                      "ran_seconds": round(ran, 1), "restart_in": delay})

    def request_stop(self, *_args) -> None:
        self.stopping = True

    def handle_signals(self) -> None:
        """From now on SIGINT/SIGTERM stop the supervisor (and so its children) instead of killing it."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)

    def run(self) -> None:
        """Supervise until SIGINT/SIGTERM, then stop everything."""
        self.handle_signals()
        if not self.stopping:
            self.start_all()
        try:
            while not self.stopping:
                self.check()
                time.sleep(self.poll_seconds)
        finally:
            self.stop_all()

    def stop_all(self) -> None:
        self.stopping = True
        running = [c for c in self.children if c.process is not None]
        log.info("stopping", extra={"children": [c.name for c in running]})
        for child in running:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for child in running:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("did not stop in time; killing", extra={"child": child.name, "pid": child.pid})
        for child in running:
            # the group may hold processes the leader left behind, even when the leader has exited
            _signal_group(child, signal.SIGKILL)
            try:
                child.process.wait(5)
            except subprocess.TimeoutExpired:
                log.error("could not reap child", extra={"child": child.name, "pid": child.pid})
        log.info("stopped")


def _signal_group(child: Child, sig: int) -> None:
    try:
        os.killpg(child.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
