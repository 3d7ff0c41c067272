"""Hypothesis strategies for hostile uploads: real image files, then broken in the ways files break
(truncated, bytes flipped, header fields overwritten with huge sizes, wrong magic, empty)."""
from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from hypothesis import strategies as st


@lru_cache(maxsize=1)
def seed_files() -> dict[str, bytes]:
    """Small valid files of every accepted kind."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, size=(24, 32), dtype=np.uint8)
    rgb = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    files = {}
    for name, array, fmt in (("grey.png", grey, "PNG"), ("rgb.png", rgb, "PNG"), ("rgb.jpg", rgb, "JPEG")):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt)
        files[name] = buffer.getvalue()
    for name, array, kwargs in (("grey16.tif", (grey.astype(np.uint16) * 200), {}),
                                ("stack.tif", rng.integers(0, 255, size=(3, 24, 32), dtype=np.uint8),
                                 {"photometric": "minisblack"}),
                                ("deflate.tif", rgb, {"compression": "zlib"})):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, **kwargs)
        files[name] = buffer.getvalue()
    return files


def png_declaring(width: int, height: int, bit_depth: int = 8, colour_type: int = 0, idat: bytes = b"") -> bytes:
    """A PNG whose header declares width x height, with whatever pixel data follows (often none)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff_declaring(width: int, height: int, bits: int = 8) -> bytes:
    """A little-endian TIFF whose one IFD declares width x height and points at 8 bytes of strip data."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 8)]
    ifd_offset = 16
    body = b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x00" * 8
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return body + ifd + struct.pack("<I", 0)


@st.composite
def broken_files(draw) -> bytes:
    files = seed_files()
    data = draw(st.sampled_from(sorted(files.values(), key=len)))
    how = draw(st.sampled_from(["truncate", "flip", "splice", "huge_png", "huge_tiff", "magic_only", "zero",
                                "garbage", "valid"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        mutable = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            mutable[draw(st.integers(0, len(mutable) - 1))] = draw(st.integers(0, 255))
        return bytes(mutable)
    if how == "splice":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    if how == "huge_png":
        side = st.integers(0, 2**31 - 1)
        return png_declaring(draw(side), draw(side), draw(st.sampled_from([1, 8, 16])),
                             draw(st.sampled_from([0, 2, 6])), draw(st.binary(max_size=32)))
    if how == "huge_tiff":
        side = st.integers(0, 2**32 - 1)
        return tiff_declaring(draw(side), draw(side), draw(st.sampled_from([1, 8, 16, 32])))
    if how == "magic_only":
        return draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00"]))
    if how == "zero":
        return b""
    if how == "garbage":
        return draw(st.binary(min_size=1, max_size=256))
    return data


# File names as people and attackers send them: traversal, absolute, Windows paths, control
# characters, non-UTF-8 bytes, no name, wrong or no extension.
hostile_filenames = st.one_of(
    st.sampled_from([b"../../etc/passwd", b"..\\..\\boot.ini", b"/absolute/x.png", b"C:\\x\\y.tif", b"", b".",
                     b"..", b"a\x00b.png", b"name\r\nX-Injected: 1.png", b"\xff\xfe\xfd.png", b"caf\xe9.png",
                     b"image.exe", b"noext", b"x" * 600 + b".png", "ünïcødé 图像.png".encode()]),
    st.binary(min_size=0, max_size=80),
)

hostile_text = st.one_of(st.binary(max_size=60), st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"A01\x00", b"x" * 300]))
