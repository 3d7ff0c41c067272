"""CSV cells a spreadsheet cannot run: a text cell that begins with `=`, `+`, `-` or `@` (a formula to
Excel, LibreOffice and Google Sheets) is written with a leading `'`, which they show as text."""
from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@")


def inert(value):
    """`value` as a CSV cell that no spreadsheet evaluates; anything but text passes unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
