"""Plate, well, site and channel from an instrument's file names.

A pattern is a regular expression searched in the file's path relative to the watched folder
(always with `/` between folders). Its named groups may be `plate`, `well`, `row`, `col`, `site`
(or `field`), `plane`, `timepoint`, `channel` and `condition`; other groups are ignored. `row` + `col`
make a well (row 2 or B, column 3 → `B03`).

With `--nuclear-channel`, `instrument_field` says which field (one multi-channel image) a file
belongs to and under which channel label: Opera/Operetta `-ch1` → `ch1`, MetaXpress `_w1` → `w1`, a
user pattern's `channel` group as written. A field is the file's folder plus plate, well, site,
plane and time point for the instrument patterns, and every named group except `channel` for a
user pattern.
"""
from __future__ import annotations

import re

from dataclasses import dataclass

FIELDS = ("plate", "well", "row", "col", "site", "field", "plane", "timepoint", "channel", "condition")

# Opera / Operetta (Harmony): r02c03f01p01-ch1sk1fk1fl1.tiff (p: plane, sk: time point), r02c03f01p01-ch1.tiff
OPERA = (r"(?:^|/)r(?P<row>\d{1,2})c(?P<col>\d{1,2})f(?P<site>\d{1,4})(?:p(?P<plane>\d{1,4}))?"
         r"-ch(?P<channel>\d{1,2})(?:sk(?P<timepoint>\d{1,5}))?")
# MetaXpress / ImageXpress: A01_s1_w1.tif, Plate1_A01_s2_w2.tif, A01_s1_w1<GUID>.tif (wavelengths are one digit)
METAXPRESS = (r"(?:^|/)(?:(?P<plate>[^/]+?)_)?(?P<well>[A-Z]{1,2}\d{1,3})"
              r"(?:_s(?P<site>\d{1,4}))?(?:_w(?P<channel>\d))?(?=[_.]|[0-9A-Fa-f]{8,}|$)")
DEFAULT_PATTERNS = (OPERA, METAXPRESS)
CHANNEL_PREFIX = {OPERA: "ch", METAXPRESS: "w"}  # the instrument's own channel labels: ch1, w1


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
        site = groups.get("site") or groups.get("field")
        if site:
            fields["site"] = _number(site)
        if "channel" in groups:
            fields["instrument_channel"] = _number(groups["channel"])
        if "condition" in groups:
            fields["condition"] = groups["condition"]
        return fields
    return {}


@dataclass(frozen=True)
class FieldName:
    """Where a channel file belongs: its field (`key`, unique in the folder), its channel `label`, the
    upload fields of the field (plate, well, site, plane, timepoint, condition) and a file name for it."""
    key: str
    label: str
    fields: dict
    filename: str


def normalise_label(label: str) -> str:
    """How labels are compared: case-insensitive, numbers without leading zeros (`CH01` = `ch1`, `2` = `ch2`)."""
    label = label.strip().lower()
    if label.isdigit():
        label = f"ch{label}"
    return re.sub(r"\d+", lambda m: str(int(m.group())), label)


def instrument_field(relative_path: str, patterns: tuple[re.Pattern | str, ...] = DEFAULT_PATTERNS) -> FieldName | None:
    """The field and channel label of a per-channel file; None when no pattern finds a channel in its name."""
    path = relative_path.replace("\\", "/")
    for pattern in patterns:
        match = re.search(pattern, path)
        if match is None:
            continue
        groups = {k: v for k, v in match.groupdict().items() if v}
        if "channel" not in groups:
            return None
        if pattern is METAXPRESS and "_thumb" in path.rsplit("/", 1)[-1].lower():
            return None  # MetaXpress's own small previews (<name>_thumb<GUID>.tif) are not channels
        prefix = CHANNEL_PREFIX.get(pattern if isinstance(pattern, str) else pattern.pattern)
        value = groups["channel"]
        # a bare number would be read by the server as an index, so it becomes ch<N> like the file's own names
        label = f"{prefix or 'ch'}{int(value)}" if prefix or value.isdigit() else value
        fields = {k: v for k, v in parse_name(path, (pattern,)).items() if k != "instrument_channel"}
        for extra in ("plane", "timepoint"):
            if extra in groups:
                fields[extra] = _number(groups[extra])
        if prefix:  # an instrument's folder is part of its field (time points and Z steps have folders)
            folder = path.rsplit("/", 1)[0] if "/" in path else ""
            parts = [f"{k}={fields[k]}" for k in ("plate", "well", "site", "plane", "timepoint") if k in fields]
            key = f"{folder}/{' '.join(parts)}" if folder else " ".join(parts)
            stem = "_".join(v for k, v in (("plate", fields.get("plate")), ("well", fields.get("well")),
                                           ("site", f"s{fields['site']}" if "site" in fields else None),
                                           ("plane", f"p{fields['plane']}" if "plane" in fields else None),
                                           ("timepoint", f"t{fields['timepoint']}" if "timepoint" in fields else None))
                            if v)
        else:
            named = {k: v for k, v in match.groupdict().items() if k != "channel"}
            key = " ".join(f"{k}={v or ''}" for k, v in sorted(named.items()))
            stem = "_".join(v for k, v in named.items() if v)
        return FieldName(key=key, label=label, fields=fields, filename=(stem or "field") + ".ome.tif")
    return None
