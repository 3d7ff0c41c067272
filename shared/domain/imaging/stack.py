"""What every reader hands over: one scene's planes with their axes and metadata, before any choice is made,
and the choices and checks readers share (scene, Z, bytes per time point, units)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shared.domain.imaging.decoders import MAX_BYTES_PER_PIXEL, check_pixels
from shared.domain.imaging.errors import ImageTooLarge
from shared.domain.imaging.read_options import OptionError


@dataclass
class Stack:
    """What a reader hands over: one scene's planes with their axes, before any choice is made."""
    format: str
    sizes: dict                    # T, C, Z, Y, X (and S: samples, for RGB)
    dtype: np.dtype
    channel_names: list[str | None]
    pixel_size_um: float | None
    scenes: list[str]
    scene: str | int | None
    load: callable                 # (t, z) -> C x Y x X array (z: "max" or an index), or Y x X x S for RGB
    rgb: bool = False
    close: callable = None         # releases the file once the planes are read



def check_plane_bytes(sizes: dict, dtype, max_pixels: int) -> None:
    """What a reader will load for one time point (every channel and Z plane) within the byte limit."""
    check_pixels(sizes.get("Y", 0), sizes.get("X", 0), max_pixels)
    nbytes = math.prod(sizes.get(k, 1) for k in "CZYXS") * np.dtype(dtype).itemsize
    limit = max_pixels * MAX_BYTES_PER_PIXEL
    if nbytes > limit:
        raise ImageTooLarge(f"the file declares {nbytes / 1e6:.0f} MB for one time point "
                            f"({' x '.join(f'{k}={v}' for k, v in sizes.items())}); the limit is {limit / 1e6:.0f} MB")


def select_scene(scenes: list[str], wanted: str | int) -> int:
    return by_name_or_index(wanted, scenes, "scene")


def by_name_or_index(wanted: str | int, names: list[str], what: str) -> int:
    """The index of the channel or scene `wanted` names (case-insensitive) or numbers; a refusal lists them."""
    if isinstance(wanted, int):
        if not 0 <= wanted < len(names):
            raise OptionError(f"{what} {wanted} asked for, but the file has {len(names)} "
                              f"({', '.join(f'{i}: {n}' for i, n in enumerate(names))})", code=f"bad_{what}")
        return wanted
    matches = [i for i, name in enumerate(names) if name.casefold() == wanted.casefold()]
    if not matches:
        raise OptionError(f"no {what} named {wanted!r}; the file's {what}s are {', '.join(names)}",
                          code=f"bad_{what}")
    return matches[0]


def reduce_z(array: np.ndarray, z: str | int, axis: int) -> np.ndarray:
    return array.max(axis=axis) if z == "max" else array.take(z, axis=axis)


_UNIT_UM = {"um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
            "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4,
            "centimeter": 1e4, "m": 1e6, "meter": 1e6, "å": 1e-4, "angstrom": 1e-4, "pm": 1e-6}


def to_um(value, unit: str | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    factor = _UNIT_UM.get((unit or "µm").strip().lower().replace("\\u00b5", "µ"))
    if factor is None or not math.isfinite(number) or number <= 0:
        return None
    return number * factor
