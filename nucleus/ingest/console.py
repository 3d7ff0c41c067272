"""What the ingester shows: each file's fate as a log line, and on a terminal a live status line
kept at the bottom (redrawn after every log line)."""
from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass

log = logging.getLogger("nucleus.ingest")


@dataclass
class Counts:
    seen: int = 0         # image files in the folder
    settling: int = 0     # still being written (or not yet stable long enough)
    queued: int = 0       # settled, waiting for their turn
    sent: int = 0         # delivered (this run and earlier ones)
    duplicates: int = 0   # bytes the server or the state already had: not sent again
    failed: int = 0       # refused by the server for good
    retrying: str = ""    # why the server is being waited for, if it is

    def line(self) -> str:
        text = (f"seen {self.seen} | settling {self.settling} | queued {self.queued} | sent {self.sent} | "
                f"duplicate {self.duplicates} | failed {self.failed}")
        return f"{text} | retrying: {self.retrying}" if self.retrying else text


class Console:
    def __init__(self, stream=None, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._status = ""
        handler = _StatusAwareHandler(self)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.handlers[:] = [handler]
        log.setLevel(logging.INFO)
        log.propagate = False

    def status(self, counts: Counts) -> None:
        if not self.live:
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        line = counts.line()[:width]
        if line == self._status:
            return
        self._status = line
        self.stream.write("\r\x1b[2K" + self._status)
        self.stream.flush()

    def write_line(self, text: str) -> None:
        if self.live and self._status:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        if self.live and self._status:
            self.stream.write(self._status)
        self.stream.flush()

    def close(self) -> None:
        if self.live and self._status:
            self.stream.write("\n")
            self.stream.flush()
            self._status = ""


class _StatusAwareHandler(logging.Handler):
    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never stop the ingester
            self.handleError(record)
