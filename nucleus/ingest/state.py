"""What this ingester has sent, kept in a JSON file outside the watched folder.

The file is rewritten atomically (temporary file, fsync, rename) after every confirmed upload, so
a crash or a kill at any moment leaves either the old or the new state, never a torn one. Entries
are keyed by the file's relative path and carry its size, mtime and sha256: an unchanged file is
recognised without reading it, a renamed or copied one by its sha256.

With `--nuclear-channel` the unit sent is a field (the per-channel files of one site, stacked into
one multi-channel image): `fields` holds each field's fate and its files, and each of its files is
also an entry under `files` (with `field` naming it), so a restart neither re-reads nor resends it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

FORMAT_VERSION = 1


class StateError(RuntimeError):
    pass


def state_home() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"


def default_state_path(folder: Path, server: str, experiment: str) -> Path:
    key = "\n".join([str(Path(folder).resolve()), normalise_server(server), experiment])
    return state_home() / "nucleus" / "ingest" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def normalise_server(server: str) -> str:
    return server.strip().rstrip("/")


def is_inside(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


class SentState:
    """Entries: relative path → {size, mtime_ns, sha256, outcome, image_id, job_id, at, ...}.
    `outcome` is `sent`, `duplicate` (the server or this state already had those bytes) or
    `rejected` (the server refused the file for good, e.g. not an image)."""

    def __init__(self, path: Path, folder: Path, server: str, experiment: str):
        self.path = Path(path)
        self.meta = {"folder": str(Path(folder).resolve()), "server": normalise_server(server),
                     "experiment": experiment}
        self.files: dict[str, dict] = {}
        self.fields: dict[str, dict] = {}
        self._by_sha: dict[str, dict] = {}  # bytes delivered → where they went (survives the path's reuse)
        self._lock_file = None

    # -- lifetime ---------------------------------------------------------------------------
    def open(self) -> "SentState":
        """Take the lock (one ingester per state file) and load what is there."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise StateError(f"another ingester is using {self.path}") from None
        self._load()
        return self

    def close(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _load(self) -> None:
        try:
            body = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc}") from None
        if not isinstance(body, dict) or body.get("version") != FORMAT_VERSION:
            raise StateError(f"{self.path} is not a nucleus ingest state file (version {FORMAT_VERSION})")
        self.files = dict(body.get("files") or {})
        self.fields = dict(body.get("fields") or {})
        for rel, entry in sorted(self.files.items()):
            self._remember_delivery(rel, entry)

    # -- queries ------------------------------------------------------------------------------
    def unchanged(self, relative: str, size: int, mtime_ns: int) -> dict | None:
        """The entry for this path when the file has not changed since it was handled."""
        entry = self.files.get(relative)
        if entry and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns:
            return entry
        return None

    def sent_as(self, sha256: str) -> dict | None:
        """`{"relative", "image_id", "job_id"}` when these bytes were already delivered, else None."""
        return self._by_sha.get(sha256)

    def field(self, key: str) -> dict | None:
        return self.fields.get(key)

    def counts(self) -> dict[str, int]:
        """Outcomes of what was sent: files, or fields for the files that went as part of one."""
        totals: dict[str, int] = {}
        entries = [e for e in self.files.values() if "field" not in e] + list(self.fields.values())
        for entry in entries:
            totals[entry.get("outcome", "?")] = totals.get(entry.get("outcome", "?"), 0) + 1
        return totals

    # -- changes ------------------------------------------------------------------------------
    def record(self, relative: str, size: int, mtime_ns: int, sha256: str, outcome: str, **details) -> None:
        """Remember one file's fate and write the state file before returning."""
        self.files[relative] = {"size": size, "mtime_ns": mtime_ns, "sha256": sha256, "outcome": outcome,
                                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details}
        self._remember_delivery(relative, self.files[relative])
        self.save()

    def record_field(self, key: str, members: dict[str, dict], sha256: str, outcome: str, **details) -> None:
        """Remember one field's fate and its files' (`members`: relative path → {label, size, mtime_ns}),
        in one write of the state file."""
        at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.fields[key] = {"sha256": sha256, "outcome": outcome, "at": at,
                            "files": {m["label"]: rel for rel, m in sorted(members.items())}, **details}
        for rel, member in members.items():
            self.files[rel] = {"size": member["size"], "mtime_ns": member["mtime_ns"], "outcome": outcome,
                               "field": key, "label": member["label"], "at": at}
        self.save()

    def record_skipped(self, relative: str, size: int, mtime_ns: int, reason: str, **details) -> None:
        """A file that is not sent (e.g. no channel in its name, or a channel that came after its field)."""
        self.files[relative] = {"size": size, "mtime_ns": mtime_ns, "outcome": "skipped", "reason": reason,
                                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details}
        self.save()

    def _remember_delivery(self, relative: str, entry: dict) -> None:
        if entry.get("outcome") in ("sent", "duplicate") and entry.get("sha256"):
            self._by_sha.setdefault(entry["sha256"], {"relative": relative, "image_id": entry.get("image_id"),
                                                      "job_id": entry.get("job_id")})

    def save(self) -> None:
        body = {"version": FORMAT_VERSION, **self.meta, "files": self.files}
        if self.fields:
            body["fields"] = self.fields
        handle = tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=self.path.name + ".",
                                             suffix=".tmp", delete=False)
        try:
            with handle:
                json.dump(body, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, self.path)
        except BaseException:
            try:
                os.unlink(handle.name)
            except FileNotFoundError:
                pass
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
