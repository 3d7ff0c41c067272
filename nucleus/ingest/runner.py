"""The ingest loop: scan, wait for files to settle, upload each once, remember it.

One upload at a time, in path order. When the server is unreachable or busy every upload pauses
together (one backoff for the server, not one per file), and the file that failed goes to the back
of the queue so a file the server keeps failing on cannot hold up the others. Nothing is recorded
as sent before the server has answered with its sha256; the server answers `duplicate` for bytes it
already has, so an upload repeated after a lost answer still makes one image.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from nucleus.ingest.client import ApiClient, Backoff, Outcome
from nucleus.ingest.console import Console, Counts, log
from nucleus.ingest.names import DEFAULT_PATTERNS, parse_name
from nucleus.ingest.scanner import FileInfo, SettleTracker, list_images
from nucleus.ingest.state import SentState


class IngestFatal(RuntimeError):
    """Nothing can be sent (the token is refused, the experiment cannot be made): stop."""


@dataclass
class RunTotals:
    sent: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    rejected_files: list[str] = field(default_factory=list)


class Ingester:
    def __init__(self, folder: Path, client: ApiClient, state: SentState, settle: float = 2.0,
                 patterns: tuple[re.Pattern | str, ...] = DEFAULT_PATTERNS, once: bool = False,
                 poll: float | None = None, backoff: Backoff | None = None, console: Console | None = None,
                 stop: threading.Event | None = None):
        self.folder = Path(folder)
        self.client, self.state, self.patterns, self.once = client, state, patterns, once
        self.tracker = SettleTracker(settle)
        self.poll = poll if poll is not None else max(0.1, min(1.0, settle / 4))
        self.backoff = backoff or Backoff()
        self.console = console or Console(live=False)
        self.stop = stop or threading.Event()
        self.totals = RunTotals()
        self.counts = Counts()
        self._experiment_ready = False
        self._attempts: dict[str, int] = {}         # retried files go to the back of the queue
        self._empty: set[tuple[str, int, int]] = set()  # empty files already reported
        self._paused_until = 0.0
        self._folder_present = True

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> RunTotals:
        log.info("watching %s -> %s, experiment %r (settle %.3g s%s)", self.folder, self.client.base,
                 self.client.experiment, self.tracker.settle, ", once" if self.once else "")
        while not self.stop.is_set():
            waiting = self.step()
            if self.once and not waiting:
                break
            self.stop.wait(self.poll)
        self.console.close()
        t = self.totals
        log.info("stopped: %d sent, %d duplicate, %d rejected in this run (%d retries)",
                 t.sent, t.duplicates, t.rejected, t.retries)
        return self.totals

    def step(self) -> int:
        """One scan and as many uploads as the server takes. Returns how many files are still waiting."""
        if self.folder.is_dir() != self._folder_present:
            self._folder_present = not self._folder_present
            if not self._folder_present:
                log.warning("the watched folder %s is not there (unmounted?); waiting for it", self.folder)
            else:
                log.info("the watched folder %s is back", self.folder)
        files = list_images(self.folder)
        new = [f for f in files if self.state.unchanged(f.relative, f.size, f.mtime_ns) is None]
        settled, changing = self.tracker.update(new)
        queue = sorted(settled, key=lambda f: (self._attempts.get(f.relative, 0), f.relative))
        done = 0
        for info in queue:
            if self.stop.is_set() or time.monotonic() < self._paused_until:
                break
            self._show(files, changing, len(queue) - done)
            if self.handle(info):
                done += 1
            else:
                break
        waiting = len(changing) + len(queue) - done
        self._show(files, changing, len(queue) - done)
        return waiting

    def _show(self, files: list[FileInfo], changing: list[FileInfo], queued: int) -> None:
        totals = self.state.counts()
        c = self.counts
        c.seen, c.settling, c.queued = len(files), len(changing), queued
        c.sent, c.duplicates, c.failed = totals.get("sent", 0), totals.get("duplicate", 0), totals.get("rejected", 0)
        if time.monotonic() >= self._paused_until:
            c.retrying = ""
        self.console.status(c)

    # -- one file ---------------------------------------------------------------------------------
    def handle(self, info: FileInfo) -> bool:
        """Deliver one settled file. False when the server must be waited for (the file stays queued)."""
        rel = info.relative
        if info.size == 0:
            if (rel, *info.signature) not in self._empty:
                self._empty.add((rel, *info.signature))
                log.info("skipped %s: empty file (waiting for content)", rel)
            return True
        try:
            data = info.path.read_bytes()
            after = info.path.stat()
        except FileNotFoundError:
            self.tracker.forget(rel)
            log.info("skipped %s: removed before it could be sent", rel)
            return True
        if len(data) != info.size or (after.st_size, after.st_mtime_ns) != info.signature:
            return True  # still being written after all: the next scan sees a new size and waits again
        sha = hashlib.sha256(data).hexdigest()

        earlier = self.state.sent_as(sha)
        if earlier is not None:
            same_path = earlier["relative"] == rel
            self.state.record(rel, info.size, info.mtime_ns, sha, "sent" if same_path else "duplicate",
                              image_id=earlier["image_id"], job_id=earlier["job_id"],
                              same_as=None if same_path else earlier["relative"])
            if not same_path:
                self.totals.duplicates += 1
                log.info("duplicate %s: same bytes as %s (image %s), not sent", rel, earlier["relative"],
                         earlier["image_id"])
            return True

        if not self._experiment_ready and not self._ensure_experiment(rel):
            return False
        fields = parse_name(rel, self.patterns)
        answer = self.client.upload(Path(rel).name, data, fields)
        if answer.kind == "missing_experiment":
            self._experiment_ready = False
            created = self.client.ensure_experiment()
            if created.kind == "sent" and created.status == 409:
                raise IngestFatal(f"experiment {self.client.experiment!r} exists but this token cannot upload to it")
            if created.kind != "sent":
                return self._outcome_without_upload(created, rel)
            self._experiment_ready = True
            answer = self.client.upload(Path(rel).name, data, fields)
        if answer.kind == "sent":
            self._sent(info, sha, answer, fields)
            return True
        if answer.kind == "rejected":
            self.state.record(rel, info.size, info.mtime_ns, sha, "rejected", error=answer.message, fields=fields)
            self.totals.rejected += 1
            self.totals.rejected_files.append(rel)
            log.error("rejected %s: %s", rel, answer.message)
            self._attempts.pop(rel, None)
            return True
        return self._outcome_without_upload(answer, rel)

    def _sent(self, info: FileInfo, sha: str, answer: Outcome, fields: dict) -> None:
        self.backoff.reset()
        self._attempts.pop(info.relative, None)
        image_id, job_id = answer.body.get("id"), answer.body.get("job_id")
        outcome = "duplicate" if answer.duplicate else "sent"
        self.state.record(info.relative, info.size, info.mtime_ns, sha, outcome, image_id=image_id, job_id=job_id,
                          fields=fields)
        described = " ".join(f"{k}={v}" for k, v in fields.items())
        if answer.duplicate:
            self.totals.duplicates += 1
            log.info("duplicate %s: the server already has these bytes (image %s)", info.relative, image_id)
        else:
            self.totals.sent += 1
            log.info("sent %s -> image %s, job %s%s", info.relative, image_id, job_id,
                     f" ({described})" if described else "")

    def _ensure_experiment(self, rel: str) -> bool:
        answer = self.client.ensure_experiment()
        if answer.kind == "sent":
            self._experiment_ready = True
            if answer.status != 409:
                log.info("created experiment %r", self.client.experiment)
            return True
        return self._outcome_without_upload(answer, rel)

    def _outcome_without_upload(self, answer: Outcome, rel: str) -> bool:
        if answer.kind == "fatal":
            raise IngestFatal(answer.message)
        delay = self.backoff.next_delay(answer.retry_after)
        self._paused_until = time.monotonic() + delay
        self._attempts[rel] = self._attempts.get(rel, 0) + 1
        self.totals.retries += 1
        self.counts.retrying = f"{answer.message} (next try in {delay:.0f} s)"
        log.warning("retrying %s in %.1f s: %s", rel, delay, answer.message)
        return False
