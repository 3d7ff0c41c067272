"""The ingest loop: scan, wait for files to settle, upload each once, remember it.

One upload at a time, in path order. When the server is unreachable or busy every upload pauses
together (one backoff for the server, not one per file), and the file that failed goes to the back
of the queue so a file the server keeps failing on cannot hold up the others. Nothing is recorded
as sent before the server has answered with its sha256; the server answers `duplicate` for bytes it
already has, so an upload repeated after a lost answer still makes one image.

With a nuclear channel (`--nuclear-channel`) the unit is a field instead of a file: the per-channel
files of one field wait until every channel the folder has shown (or `--channels` names) is there
and settled, then go as one multi-channel OME-TIFF with `channel=<nuclear label>`. A channel file is
never sent on its own.
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
from nucleus.ingest.names import DEFAULT_PATTERNS, FieldName, instrument_field, normalise_label, parse_name
from nucleus.ingest.scanner import FileInfo, SettleTracker, list_images
from nucleus.ingest.stacking import StackError, stack_channels
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
    incomplete: list[str] = field(default_factory=list)  # fields still missing a channel at the last scan
    held: list[str] = field(default_factory=list)        # channel files not sent for want of --nuclear-channel


class Ingester:
    def __init__(self, folder: Path, client: ApiClient, state: SentState, settle: float = 2.0,
                 patterns: tuple[re.Pattern | str, ...] = DEFAULT_PATTERNS, once: bool = False,
                 poll: float | None = None, backoff: Backoff | None = None, console: Console | None = None,
                 stop: threading.Event | None = None, nuclear_channel: str | None = None,
                 channels: tuple[str, ...] = (), pixel_size_um: float | None = None):
        self.folder = Path(folder)
        self.nuclear = normalise_label(nuclear_channel) if nuclear_channel else None
        self.channels = {normalise_label(c) for c in channels}
        self.extra_fields = {"pixel_size_um": repr(pixel_size_um)} if pixel_size_um else {}
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
        self._told: set[tuple] = set()  # field and file notices already logged once

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
        if self.nuclear:
            return self._step_fields(files, settled, changing)
        settled = self._without_multichannel_fields(files, settled)
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

    def _without_multichannel_fields(self, files: list[FileInfo], settled: list[FileInfo]) -> list[FileInfo]:
        """Without --nuclear-channel, files of a field that has several instrument channels are held back:
        sent one by one, every marker channel would be segmented as if it were nuclei."""
        names = {f.relative: instrument_field(f.relative, self.patterns) for f in files}
        labels: dict[str, set[str]] = {}
        for name in names.values():
            if name:
                labels.setdefault(name.key, set()).add(name.label)
        held = {key: found for key, found in labels.items() if len(found) > 1}
        self.totals.held = sorted(f.relative for f in settled if names[f.relative] and names[f.relative].key in held)
        if self.totals.held:
            channels = sorted(set().union(*held.values()))
            self._tell(("held", tuple(channels)), "error",
                       "not sent: %d file(s) of fields imaged in several channels (%s); give --nuclear-channel LABEL "
                       "(e.g. %s) to send each field as one multi-channel image", len(self.totals.held),
                       ", ".join(channels), channels[0])
        return [f for f in settled if f.relative not in self.totals.held]

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
        fields = {**parse_name(rel, self.patterns), **self.extra_fields}
        answer = self._upload(Path(rel).name, data, fields)
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

    def _upload(self, filename: str, data: bytes, fields: dict) -> Outcome:
        """One upload; an experiment deleted meanwhile is made again and the upload repeated once."""
        answer = self.client.upload(filename, data, fields)
        if answer.kind != "missing_experiment":
            return answer
        self._experiment_ready = False
        created = self.client.ensure_experiment()
        if created.kind == "sent" and created.status == 409:
            raise IngestFatal(f"experiment {self.client.experiment!r} exists but this token cannot upload to it")
        if created.kind != "sent":
            return created
        self._experiment_ready = True
        return self.client.upload(filename, data, fields)

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

    # -- fields of per-channel files --------------------------------------------------------------
    def _step_fields(self, files: list[FileInfo], settled: list[FileInfo], changing: list[FileInfo]) -> int:
        names = {f.relative: instrument_field(f.relative, self.patterns) for f in files}
        seen_labels = {normalise_label(n.label) for n in names.values() if n}
        expected = (self.channels or seen_labels) | {self.nuclear}
        if seen_labels and self.nuclear not in seen_labels:
            self._tell(("no-nuclear", tuple(sorted(seen_labels))), "warning",
                       "no file carries the nuclear channel %r; channels seen: %s", self.nuclear,
                       ", ".join(sorted(seen_labels)))
        fields: dict[str, dict[str, FileInfo]] = {}
        field_names: dict[str, FieldName] = {}
        clashes: set[str] = set()
        still = {f.relative for f in changing}
        for info in settled + changing:
            name = names.get(info.relative)
            if info.relative in still and (name is None or self._delivered(name.key)):
                continue  # skipped once it is completely written
            if name is None:
                self.state.record_skipped(info.relative, info.size, info.mtime_ns, "no instrument channel in its name")
                log.warning("skipped %s: its name carries no instrument channel (with --nuclear-channel only "
                            "per-channel files are sent, as fields)", info.relative)
                continue
            if self._delivered(name.key):
                self.state.record_skipped(info.relative, info.size, info.mtime_ns,
                                          "came after its field was sent", late_for=name.key, label=name.label)
                log.warning("skipped %s: channel %s came after its field %s was sent", info.relative, name.label,
                            name.key)
                continue
            members = fields.setdefault(name.key, {})
            label = normalise_label(name.label)
            if label in members:
                clashes.add(name.key)
            members[label] = info
            field_names.setdefault(name.key, name)
        # a refused field is tried again when one of its files changes, with its unchanged files too
        changed = {f.relative for f in settled + changing}
        for info in files:
            name = names.get(info.relative)
            if name and name.key in fields and info.relative not in changed and self.state.field(name.key):
                fields[name.key].setdefault(normalise_label(name.label), info)
        ready, waiting = [], 0
        self.totals.incomplete = []
        for key in sorted(fields):
            members = fields[key]
            if any(m.relative in still for m in members.values()):
                waiting += 1
            elif key in clashes:
                self._tell(("clash", key), "error", "field %s has two files for one channel; not sent: %s", key,
                           ", ".join(sorted(m.relative for m in members.values())))
                self.totals.incomplete.append(f"{key} (two files for one channel)")
            elif any(m.size == 0 for m in members.values()):
                self._tell(("empty", key), "info", "field %s waits: a channel file is empty", key)
                self.totals.incomplete.append(f"{key} (an empty channel file)")
                waiting += 0 if self.once else 1
            elif not expected <= set(members):
                missing = ", ".join(sorted(expected - set(members)))
                self._tell(("incomplete", key, missing), "info", "field %s waits for channel(s) %s", key, missing)
                self.totals.incomplete.append(f"{key} (no {missing})")
                waiting += 0 if self.once else 1
            else:
                ready.append(key)
        ready.sort(key=lambda k: (self._attempts.get(k, 0), k))
        done = 0
        for key in ready:
            if self.stop.is_set() or time.monotonic() < self._paused_until:
                break
            self._show(files, changing, len(ready) - done)
            if self.handle_field(field_names[key], fields[key]):
                done += 1
            else:
                break
        self._show(files, changing, len(ready) - done)
        return waiting + len(ready) - done

    def handle_field(self, name: FieldName, members: dict[str, FileInfo]) -> bool:
        """Stack one complete field and deliver it. False when the server must be waited for."""
        order = sorted(members, key=_channel_order)
        contents, entries = [], {}
        for label in order:
            info = members[label]
            try:
                data = info.path.read_bytes()
                after = info.path.stat()
            except FileNotFoundError:
                self.tracker.forget(info.relative)
                return True  # the next scan sees the field without it
            if len(data) != info.size or (after.st_size, after.st_mtime_ns) != info.signature:
                return True
            original = instrument_field(info.relative, self.patterns).label
            contents.append((original, Path(info.relative).name, data))
            entries[info.relative] = {"label": original, "size": info.size, "mtime_ns": info.mtime_ns}
        nuclear_label = contents[order.index(self.nuclear)][0]
        try:
            image = stack_channels(contents)
        except StackError as exc:
            self.state.record_field(name.key, entries, "", "rejected", error=str(exc))
            self.totals.rejected += 1
            self.totals.rejected_files.append(name.key)
            log.error("rejected field %s: %s", name.key, exc)
            return True
        sha = hashlib.sha256(image).hexdigest()
        fields = {**name.fields, "channel": nuclear_label, **self.extra_fields}
        if not self._experiment_ready and not self._ensure_experiment(name.key):
            return False
        answer = self._upload(name.filename, image, fields)
        if answer.kind == "sent":
            self.backoff.reset()
            self._attempts.pop(name.key, None)
            outcome = "duplicate" if answer.duplicate else "sent"
            self.state.record_field(name.key, entries, sha, outcome, image_id=answer.body.get("id"),
                                    job_id=answer.body.get("job_id"), fields=fields, filename=name.filename)
            if answer.duplicate:
                self.totals.duplicates += 1
            else:
                self.totals.sent += 1
            log.info("%s field %s (%s, nuclear %s) -> image %s, job %s", outcome, name.key,
                     "+".join(c[0] for c in contents), nuclear_label, answer.body.get("id"), answer.body.get("job_id"))
            return True
        if answer.kind == "rejected":
            self.state.record_field(name.key, entries, sha, "rejected", error=answer.message, fields=fields)
            self.totals.rejected += 1
            self.totals.rejected_files.append(name.key)
            log.error("rejected field %s: %s", name.key, answer.message)
            self._attempts.pop(name.key, None)
            return True
        return self._outcome_without_upload(answer, name.key)

    def _delivered(self, key: str) -> bool:
        return (self.state.field(key) or {}).get("outcome") in ("sent", "duplicate")

    def _tell(self, what: tuple, level: str, message: str, *args) -> None:
        if what not in self._told:
            self._told.add(what)
            getattr(log, level)(message, *args)

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


def _channel_order(label: str) -> tuple:
    """ch2 before ch10; labels without a number by name."""
    number = re.search(r"\d+", label)
    return (int(number.group()) if number else float("inf"), label)
