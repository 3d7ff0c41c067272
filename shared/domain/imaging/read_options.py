"""How to read a microscope file: the options and their checks, importable without numpy so that the command
line checks them before loading anything heavy (shared.domain.imaging.reading applies them)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from shared.domain.imaging.errors import ImageError

Z_DEFAULT = "max"   # a Z stack is reduced to its maximum-intensity projection unless a plane is chosen
T_DEFAULT = 0       # a time series gives its first time point unless another is chosen
SCENE_DEFAULT = 0   # a file of several scenes (series, positions) gives its first unless another is chosen
READ_HELP = {
    "channel": "Nuclear channel: its name in the file's metadata (case-insensitive, e.g. Hoechst, DAPI) or its "
               "index from 0. Required for a multi-channel fluorescence file; an RGB photo is kept as colour.",
    "z": f"Z stack: 'max' (maximum-intensity projection) or a plane index from 0. Default: {Z_DEFAULT}.",
    "t": f"Time series: the time point to read, from 0. Default: {T_DEFAULT}.",
    "scene": f"Scene (series, position) to read: its index from 0 or its name. Default: {SCENE_DEFAULT}.",
    "pixel_size": "Pixel size in micrometres; overrides the file's own (read from its metadata when present).",
}


class OptionError(ImageError):
    """A reading option that cannot apply to this file (an unknown channel, a Z plane it lacks...)."""

    def __init__(self, message: str, code: str = "bad_option"):
        super().__init__(message, code=code)


@dataclass(frozen=True)
class ReadOptions:
    channel: str | int | None = None
    z: str | int = Z_DEFAULT
    t: int = T_DEFAULT
    scene: str | int = SCENE_DEFAULT
    pixel_size_um: float | None = None  # overrides the file's


def parse_channel(text: str | int | None) -> str | int | None:
    """'2' -> 2, 'Hoechst' -> 'Hoechst', '' -> None."""
    if text is None or isinstance(text, int):
        return text
    text = text.strip()
    if not text:
        return None
    if len(text) > 200 or any(ord(ch) < 32 for ch in text):
        raise OptionError("a channel is a name from the file's metadata or an index from 0", code="bad_channel")
    return int(text) if text.isdigit() else text


def parse_z(text: str | int | None) -> str | int:
    if text is None or text == "":
        return Z_DEFAULT
    if isinstance(text, int) or str(text).strip().isdigit():
        return int(text)
    if str(text).strip().lower() == "max":
        return "max"
    raise OptionError(f"z must be 'max' (maximum projection) or a plane index from 0, not {str(text)[:40]!r}")


def parse_index(name: str, text: str | int | None, default: int) -> int:
    if text is None or text == "":
        return default
    if isinstance(text, int) or str(text).strip().isdigit():
        return int(text)
    raise OptionError(f"{name} must be a whole number from 0, not {str(text)[:40]!r}")


def parse_scene(text: str | int | None) -> str | int:
    if text is None or text == "":
        return SCENE_DEFAULT
    if isinstance(text, int) or str(text).strip().isdigit():
        return int(text)
    return str(text).strip()[:200]


def check_pixel_size(value: str | float | None) -> float | None:
    """A given pixel size in µm: None when not given; zero, negative or not a number is refused."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise OptionError(f"the pixel size must be a positive number of micrometres, not {str(value)[:40]!r}",
                          code="bad_pixel_size")
    return number


def column_name(channel: str) -> str:
    """A channel's name as a column suffix: lowercased, each run of characters other than a-z and 0-9 -> '_'."""
    return re.sub(r"[^a-z0-9]+", "_", channel.lower())


def channel_columns(names: list[str]) -> list[str]:
    """Column suffixes for the channels, in order; a name that repeats gets its index appended."""
    suffixes = [column_name(n) for n in names]
    return [s if suffixes.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(suffixes)]
