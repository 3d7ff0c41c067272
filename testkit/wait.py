"""Polling instead of sleeping: wait until something becomes true, or fail saying what never happened."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.2, message: str | None = None) -> T:
    """Call `predicate` until it returns something truthy and return that value.

    Exceptions raised by the predicate count as "not yet" (a server still starting refuses
    connections); the last one is chained to the TimeoutError for the report.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_error = None
        except Exception as exc:  # noqa: BLE001 - anything counts as "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            raise TimeoutError(f"{what} not met within {timeout:g} s") from last_error
        time.sleep(interval)
