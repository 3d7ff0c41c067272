"""Hostile label uploads for tests/system/test_hostile_inputs.py and bench/hostile_inputs.py (no tests here).

Every bomb is real: the bytes would inflate to what they declare. They are built without ever holding the
inflated data (a deflate stream of zeros is one compressed megabyte repeated), so making them costs the
process almost nothing and a measurement of the API's memory sees only what refusing them costs.
"""
from __future__ import annotations

import io
import re
import struct
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from testkit.api import png_bytes

MiB = 1 << 20
_ZERO_BLOCK = bytes(MiB)


@lru_cache(maxsize=1)
def _deflated_zero_megabyte() -> bytes:
    """Raw deflate blocks (not final, byte-aligned, self-contained) that inflate to one MiB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(_ZERO_BLOCK) + compressor.flush(zlib.Z_FULL_FLUSH)


@lru_cache(maxsize=8)
def deflated_zeros(n: int) -> bytes:
    """A raw deflate stream of `n` zero bytes, about n / 1000 bytes long, made in O(n / 1 MiB) steps."""
    whole, rest = divmod(n, MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH)
    return _deflated_zero_megabyte() * whole + tail


@lru_cache(maxsize=8)
def crc32_of_zeros(n: int) -> int:
    crc = 0
    whole, rest = divmod(n, MiB)
    for _ in range(whole):
        crc = zlib.crc32(_ZERO_BLOCK, crc)
    return zlib.crc32(bytes(rest), crc)


def zlib_zeros(n: int) -> bytes:
    """A zlib stream (header, deflate, Adler-32) of `n` zero bytes."""
    adler = ((n % 65521) << 16) | 1
    return b"\x78\xda" + deflated_zeros(n) + struct.pack(">I", adler)


@dataclass
class RawEntry:
    name: str
    payload: bytes  # as stored in the archive (already compressed for method 8)
    size: int  # the uncompressed size the headers declare
    crc: int
    method: int = 8
    flags: int = 0


def raw_zip(entries: list[RawEntry], declared_count: int | None = None) -> bytes:
    """A zip written field by field, so that its headers may say what a bomb or a forgery needs (ZIP64 when a
    size needs it)."""
    out, central = io.BytesIO(), io.BytesIO()
    for entry in entries:
        offset = out.tell()
        name = entry.name.encode()
        big = entry.size >= 0xFFFFFFFF or len(entry.payload) >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, entry.size, len(entry.payload)) if big else b""
        sizes = (0xFFFFFFFF, 0xFFFFFFFF) if big else (len(entry.payload), entry.size)
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 45 if big else 20, entry.flags, entry.method, 0, 0x21,
                              entry.crc, *sizes, len(name), len(extra)) + name + extra + entry.payload)
        central_extra = (struct.pack("<HHQQQ", 1, 24, entry.size, len(entry.payload), offset) if big else b"")
        central.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45 if big else 20, 45 if big else 20, entry.flags,
                                  entry.method, 0, 0x21, entry.crc, *sizes, len(name), len(central_extra), 0, 0, 0,
                                  0, 0xFFFFFFFF if big else offset) + name + central_extra)
    start = out.tell()
    out.write(central.getvalue())
    count = len(entries) if declared_count is None else declared_count
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                          len(central.getvalue()), start, 0))
    return out.getvalue()


def zeros_entry(name: str, n: int, crc: int | None = None) -> RawEntry:
    """An entry of `n` zeros; give `crc` to skip computing it (a second per GiB) where only headers matter."""
    return RawEntry(name, deflated_zeros(n), n, crc32_of_zeros(n) if crc is None else crc)


def stored_entry(name: str, data: bytes) -> RawEntry:
    return RawEntry(name, data, len(data), zlib.crc32(data), method=0)


def png_of_zeros(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A valid greyscale PNG of width x height zeros whose pixel data is about width*height/1000 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = 1 + width * bit_depth // 8  # filter byte 0, then zeros: the whole stream is zeros
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib_zeros(row * height))
            + chunk(b"IEND", b""))


def tiff_of_zeros(width: int, height: int, bits: int = 16) -> bytes:
    """A valid one-strip deflate-compressed greyscale TIFF of width x height zeros."""
    strip = zlib_zeros(width * height * bits // 8)
    tags = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 8), (262, 3, 1), (273, 4, 0),
            (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(tags) + 4
    entries = b"".join(struct.pack("<HHLL", tag, kind, 1, data_at if tag == 273 else value)
                       if kind == 4 else struct.pack("<HHLHH", tag, kind, 1, value, 0) for tag, kind, value in tags)
    return b"II*\x00" + struct.pack("<L", ifd_at) + struct.pack("<H", len(tags)) + entries + b"\x00" * 4 + strip


def mask_zip_with_bad_crc(shape: tuple[int, int]) -> bytes:
    """A zip of one good mask PNG whose recorded CRC-32 is wrong."""
    mask = np.zeros(shape, np.uint8)
    mask[2:9, 3:11] = 255
    good = png_bytes(mask)
    return raw_zip([RawEntry("masks/0001.png", _raw_deflate(good), len(good), zlib.crc32(good) ^ 0xDEADBEEF)])


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


# --- measuring the process ----------------------------------------------------------------------------

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1))


def can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


@dataclass
class Cost:
    seconds: float = 0.0
    peak_growth_bytes: int = 0  # the process's peak resident memory above what it held before


@contextmanager
def measured():
    """Time and peak resident-memory growth of the block (Linux: /proc/self/status VmHWM, its peak reset
    through /proc/self/clear_refs first)."""
    cost = Cost()
    can_reset_peak()
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    yield cost
    cost.seconds = time.perf_counter() - started
    cost.peak_growth_bytes = max(0, _status_kib("VmHWM") - before) * 1024


# --- the catalogue ----------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    make: object  # () -> (bytes, filename)
    status: int
    code: str
    seconds: float = 1.0  # refused within; more for the few that are refused only once parsed


def _roi_rect(left: int, top: int, right: int, bottom: int, name: str) -> bytes:
    from roifile import ROI_TYPE, ImagejRoi

    return ImagejRoi(roitype=ROI_TYPE.RECT, name=name, left=left, top=top, right=right, bottom=bottom).tobytes()


def _big_roi(shape: tuple[int, int], points: int) -> bytes:
    from roifile import ImagejRoi

    height, width = shape
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    ring = np.stack([width / 2 + width / 3 * np.cos(angles), height / 2 + height / 3 * np.sin(angles)], axis=1)
    return ImagejRoi.frompoints(ring.astype(np.float32), name="big").tobytes()


def jpeg_declaring(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")  # start of frame: length (2), precision (1), height (2), width (2)
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def _tiff_stack(shape: tuple[int, int], planes: int) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    page = np.zeros(shape, np.uint32)
    tifffile.imwrite(buffer, (page for _ in range(planes)), shape=(planes, *shape), dtype=np.uint32,
                     compression="zlib")
    return buffer.getvalue()


def _zigzag(shape: tuple[int, int], vertices: int) -> bytes:
    height, width = shape
    xs = np.linspace(0.5, width - 0.5, vertices)
    ys = np.where(np.arange(vertices) % 2 == 0, 0.25, height - 0.25)
    ring = [[round(float(x), 3), float(y)] for x, y in zip(xs, ys)] + [[width - 0.5, height + 0.0], [0.5, height]]
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
               "properties": {"objectType": "detection"}}
    import json

    return json.dumps({"type": "FeatureCollection", "features": [feature]}).encode()


def catalogue(shape: tuple[int, int]) -> list[Case]:
    """Every hostile label upload for an image of `shape` (height, width), with the refusal it must get."""
    from shared.domain.labels import geojson, masks

    height, width = shape
    pixels = height * width
    gib = 1 << 30
    bomb = lambda: raw_zip([zeros_entry("masks/0001.png", 1536 * MiB)])  # noqa: E731
    inner = lambda: raw_zip([zeros_entry("masks/0001.png", 32 * MiB, crc=0)])  # noqa: E731
    many = max(1, int(1.1 * gib) // (pixels * 8))
    values = max(geojson.MIN_VALUES, pixels // geojson.PIXELS_PER_VALUE)
    most_masks = min(masks.MAX_MASKS, masks.MAX_MASK_PIXELS // pixels)
    return [
        Case("zip bomb: 1.5 MB inflating to 1.5 GiB in one mask", lambda: (bomb(), "masks.zip"), 413,
             "archive_too_large"),
        Case(f"zip bomb: {many} masks each within the per-mask limit, 1.1 GiB in all",
             lambda: (raw_zip([zeros_entry(f"masks/{i:05d}.png", pixels * 8, crc=0) for i in range(many)]),
                      "masks.zip"), 413, "archive_too_large"),
        Case("huge ratio: 100 MiB of masks in a 100 KB zip",
             lambda: (raw_zip([zeros_entry(f"masks/{i:05d}.png", 100 * MiB // 200, crc=0) for i in range(200)]),
                      "masks.zip"), 413, "archive_too_large"),
        Case("zip64 entry declaring 5 GiB",
             lambda: (raw_zip([RawEntry("masks/0001.png", deflated_zeros(MiB), 5 * gib, 0)]), "masks.zip"), 413,
             "archive_too_large"),
        Case("lying header: declares 64 KiB, deflate stream holds 1.5 GiB",
             lambda: (raw_zip([RawEntry("masks/0001.png", deflated_zeros(1536 * MiB), 64 << 10,
                                        crc32_of_zeros(64 << 10))]), "masks.zip"), 400, "unsupported_format"),
        Case("nested: a zip of 32 MiB as a mask inside a zip",
             lambda: (raw_zip([stored_entry("masks/inner.zip", inner())]), "masks.zip"), 400, "unsupported_format"),
        Case("nested: a zip of 32 MiB as a ROI inside a RoiSet",
             lambda: (raw_zip([stored_entry("0001-0001.roi", inner())]), "RoiSet.zip"), 400, "bad_labels"),
        Case("ROI entry inflating to 100 MiB", lambda: (raw_zip([zeros_entry("0001.roi", 100 * MiB, crc=0)]),
                                                        "RoiSet.zip"), 413, "archive_too_large"),
        Case("60 000 entries", lambda: (raw_zip([stored_entry(f"{i}.png", b"") for i in range(60_000)]),
                                        "masks.zip"), 413, "archive_too_large"),
        Case("end record declaring 60 000 entries",
             lambda: (raw_zip([stored_entry("a.png", b"x")], declared_count=60_000), "masks.zip"), 413,
             "archive_too_large"),
        Case("more masks than a zip may hold for this image",
             lambda: (raw_zip([stored_entry(f"masks/{i:05d}.png", b"") for i in range(most_masks + 1)]), "masks.zip"),
             413, "archive_too_large"),
        Case("bad CRC", lambda: (mask_zip_with_bad_crc(shape), "masks.zip"), 400, "bad_archive"),
        Case("truncated zip", lambda: (mask_zip_with_bad_crc(shape)[:-30], "masks.zip"), 400, "bad_archive"),
        Case("corrupt deflate stream",
             lambda: (raw_zip([RawEntry("masks/0001.png", bytes(range(256)) * 8, 5000, 0)]), "masks.zip"), 400,
             "bad_archive"),
        Case("LZMA entry", lambda: (raw_zip([RawEntry("masks/0001.png", b"\x00" * 64, 64, 0, method=14)]),
                                    "masks.zip"), 400, "bad_archive"),
        Case("encrypted entry", lambda: (raw_zip([RawEntry("masks/0001.png", b"\x00" * 64, 64, 0, flags=1)]),
                                         "masks.zip"), 400, "bad_archive"),
        Case("PNG label bomb: 15000x15000", lambda: (png_of_zeros(15000, 15000), "labels.png"), 400, "bad_labels"),
        Case("16-bit PNG label bomb: 15000x15000", lambda: (png_of_zeros(15000, 15000, 16), "labels.png"), 400,
             "bad_labels"),
        Case("TIFF label bomb: 15000x15000", lambda: (tiff_of_zeros(15000, 15000), "labels.tif"), 400,
             "bad_labels"),
        Case("JPEG label declaring 60000x60000", lambda: (jpeg_declaring(60000, 60000), "labels.jpg"), 400,
             "bad_labels"),
        Case("TIFF label of the image's size, 8 uint32 planes deep", lambda: (_tiff_stack(shape, 8), "labels.tif"),
             413, "image_too_large"),
        Case("mask bomb: 15000x15000 PNG in a mask zip",
             lambda: (raw_zip([stored_entry("masks/0001.png", png_of_zeros(15000, 15000))]), "masks.zip"), 400,
             "bad_labels"),
        Case("oversize label: one pixel wider", lambda: (png_bytes(_labels((height, width + 1))), "labels.png"), 400,
             "bad_labels"),
        Case("undersize label: half the size", lambda: (png_bytes(_labels((height // 2, width // 2))), "labels.png"),
             400, "bad_labels"),
        Case("empty label", lambda: (png_bytes(np.zeros(shape, np.uint16)), "labels.png"), 400, "bad_labels"),
        Case("GeoJSON of twice the values allowed", lambda: (b"[" + b"0," * (2 * values) + b"0]", "cells.geojson"), 413,
             "geojson_too_large"),
        Case("GeoJSON of empty objects, just under the value limit",
             lambda: (b"[" + b"{}," * (values // 2 - 10) + b"{}]", "cells.geojson"), 400, "bad_geojson", 2.0),
        Case("GeoJSON of empty lists, just under the value limit",
             lambda: (b"[" + b"[]," * (values // 2 - 10) + b"[]]", "cells.geojson"), 400, "bad_geojson", 2.0),
        Case("GeoJSON nested 50 000 deep", lambda: (b"[" * 50_000 + b"]" * 50_000, "cells.geojson"), 400,
             "bad_geojson"),
        Case("GeoJSON zigzag polygon crossing every row 20 000 times", lambda: (_zigzag(shape, 20_000), "x.geojson"),
             400, "labels_too_complex"),
        Case("single .roi file of a million points", lambda: (_big_roi(shape, 1_000_000), "big.roi"), 413,
             "labels_too_large"),
        Case("RoiSet of 500 ROIs each covering the image",
             lambda: (raw_zip([stored_entry(f"{i:04d}.roi", _roi_rect(0, 0, width, height, str(i)))
                               for i in range(500)]), "RoiSet.zip"), 400, "labels_too_complex", 2.0),
    ]


def _labels(shape: tuple[int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.uint16)
    labels[2:10, 3:12] = 1
    return labels
