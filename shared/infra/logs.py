"""Logs: one JSON object per line on stderr for every service, or one readable line for a person watching.

Fields: `ts`, `level`, `service`, `logger`, `msg`, plus any `extra=` given to the log call and the
job id bound with `bind_job(...)`, so every line a worker writes about a job carries its `job_id`.
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

_current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("nucleus_job_id", default=None)
_service = "nucleus"

# kombu warns on every file-system broker connection that it has no hostname (there is none to have)
# tifffile warns once per odd tag of a corrupt upload, thousands of lines; the ImageError says it once.
QUIET_LOGGERS = ("kombu.connection", "tifffile", "roifile")

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": _service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = _current_job.get()
        if job_id is not None:
            entry["job_id"] = job_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    """One readable line for a person at a terminal: time, service and process, level, the message, then the
    `extra=` fields and the job as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = [f"{key}={_plain(value)}" for key, value in vars(record).items()
                  if key not in _STANDARD and not key.startswith("_")]
        job_id = _current_job.get()
        if job_id is not None:
            fields.insert(0, f"job={job_id}")
        message = record.getMessage().strip()
        if record.name == "py.warnings":
            message = " ".join(message.split())  # a library's multi-line warning, as one line
        if record.levelno >= logging.WARNING or record.name.split(".")[0] not in ("nucleus", "services", "shared"):
            message = f"{record.name}: {message}"  # who says it, where the service alone does not tell
        line = " ".join([f"{when} {_service}[{record.process}] {record.levelname:<7} {message}", *fields])
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _plain(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(ch in text for ch in ' "=\n') else text


def configure_logging(service: str, level: str | None = None, json_lines: bool | None = None) -> None:
    """Route the root logger (and so every library's, and Python's warnings) to stderr in the chosen format:
    JSON lines, or readable lines (NUCLEUS_LOG_JSON=0; `nucleus up` picks them on a terminal). Idempotent."""
    global _service
    from shared.infra.settings import get_settings

    settings = get_settings()
    _service = service
    handler = logging.StreamHandler(sys.stderr)
    use_json = settings.log_json if json_lines is None else json_lines
    handler.setFormatter(JsonFormatter() if use_json else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or settings.log_level).upper())
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.captureWarnings(True)  # a library's warning becomes one log record, not free text on stderr


@contextmanager
def bind_job(job_id: str | None) -> Iterator[None]:
    """Every log line written inside this block carries `job_id`."""
    token = _current_job.set(job_id)
    try:
        yield
    finally:
        _current_job.reset(token)
