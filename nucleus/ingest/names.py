"""Plate, well, site and channel from an instrument's file names.

A pattern is a regular expression searched in the file's path relative to the watched folder
(always with `/` between folders). Its named groups may be `plate`, `well`, `row`, `col`, `site`,
`channel` and `condition`; other groups are ignored. `row` + `col` make a well (row 2 or B,
column 3 → `B03`).
"""
from __future__ import annotations

import re

FIELDS = ("plate", "well", "row", "col", "site", "channel", "condition")

# Opera / Operetta (Harmony): r02c03f01p01-ch1sk1fk1fl1.tiff, r02c03f01p01-ch1.tiff
OPERA = r"(?:^|/)r(?P<row>\d{1,2})c(?P<col>\d{1,2})f(?P<site>\d{1,4})(?:p\d{1,4})?-ch(?P<channel>\d{1,2})"
# MetaXpress / ImageXpress: A01_s1_w1.tif, Plate1_A01_s2_w2.tif, A01_s1_w1<GUID>.tif (wavelengths are one digit)
METAXPRESS = (r"(?:^|/)(?:(?P<plate>[^/]+?)_)?(?P<well>[A-Z]{1,2}\d{1,3})"
              r"(?:_s(?P<site>\d{1,4}))?(?:_w(?P<channel>\d))?(?=[_.]|[0-9A-Fa-f]{8,}|$)")
DEFAULT_PATTERNS = (OPERA, METAXPRESS)


class PatternError(ValueError):
    pass


def compile_pattern(text: str) -> re.Pattern:
    """A user's --pattern: a valid regex with at least one known named group."""
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise PatternError(f"not a valid regular expression: {exc}") from None
    if not set(pattern.groupindex) & set(FIELDS):
        raise PatternError(f"the pattern names none of the groups {', '.join(FIELDS)}, e.g. (?P<well>[A-P]\\d+)")
    return pattern


def row_letters(row: str) -> str:
    """'B' → 'B'; '2' or '02' → 'B'; '27' → 'AA' (1536-well plates have rows up to AF)."""
    if row.isalpha():
        return row.upper()
    number, letters = int(row), ""
    if number < 1:
        raise ValueError(f"row {row!r} is not 1 or more")
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def well_name(row: str, col: str) -> str:
    return f"{row_letters(row)}{int(col):02d}"


def _number(value: str) -> str:
    return str(int(value)) if value.isdigit() else value


def parse_name(relative_path: str, patterns: tuple[re.Pattern | str, ...] = DEFAULT_PATTERNS) -> dict[str, str]:
    """Metadata from the first pattern that matches, as upload form fields: `plate`, `well`, `site`,
    `condition` and `instrument_channel` (the API's own `channel` picks a channel inside a file)."""
    path = relative_path.replace("\\", "/")
    for pattern in patterns:
        match = re.search(pattern, path)
        if match is None:
            continue
        groups = {k: v for k, v in match.groupdict().items() if k in FIELDS and v}
        fields: dict[str, str] = {}
        if "plate" in groups:
            fields["plate"] = groups["plate"]
        well = groups.get("well")
        if well:
            letters = well.rstrip("0123456789")
            fields["well"] = well_name(letters, well[len(letters):]) if letters and letters != well else well.upper()
        elif "row" in groups and "col" in groups:
            try:
                fields["well"] = well_name(groups["row"], groups["col"])
            except ValueError:
                pass
        if "site" in groups:
            fields["site"] = _number(groups["site"])
        if "channel" in groups:
            fields["instrument_channel"] = _number(groups["channel"])
        if "condition" in groups:
            fields["condition"] = groups["condition"]
        return fields
    return {}
