"""Zip archives of labels (masks, ImageJ ROIs) opened only after their central directory passes the limits.

The central directory is walked here, before zipfile builds anything, so a bomb or a million-entry archive
is refused from its declared sizes alone: the number of entries, each entry's size, the total and the
compression ratio. Reading an entry then never returns more than its declared size (zipfile stops there and
checks the CRC), so what was checked is what gets inflated.
"""
from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass

from shared.domain.imaging.errors import ImageError
from shared.domain.labels.errors import LabelsTooLarge

MAX_ENTRIES = 50_000
MAX_INFLATED_BYTES = 1 << 30
# Above RATIO_FREE_BYTES in all, an archive may inflate to at most MAX_RATIO times its own size: masks as PNG
# hardly compress further, ROI files compress a few times; a small archive of uncompressed masks may exceed it.
MAX_RATIO = 100
RATIO_FREE_BYTES = 16 << 20
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_MAX_COMMENT = 0xFFFF


class ArchiveTooLarge(LabelsTooLarge):
    def __init__(self, message: str):
        super().__init__(message, code="archive_too_large")


def bad_archive(message: str) -> ImageError:
    return ImageError(f"not a readable zip: {message}", code="bad_archive")


@dataclass(frozen=True)
class Entry:
    index: int  # its place in the central directory, as zipfile lists it
    name: str
    size: int  # declared uncompressed bytes
    compressed: int
    method: int
    encrypted: bool


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", _EOCD)


def entries(data: bytes, max_entries: int = MAX_ENTRIES) -> list[Entry]:
    """The entries the central directory declares, refused beyond `max_entries` before the rest are read."""
    view = memoryview(data)
    at = data.rfind(_EOCD, max(0, len(data) - 22 - _MAX_COMMENT))
    if at < 0 or at + 22 > len(data):
        raise bad_archive("its end-of-archive record is missing (truncated?)")
    _, _, _, _, count, size, offset, _ = struct.unpack_from("<4s4H2LH", view, at)
    end = at
    if count == 0xFFFF or size == 0xFFFFFFFF or offset == 0xFFFFFFFF:
        locator = at - 20
        if locator < 0 or data[locator:locator + 4] != _EOCD64_LOCATOR:
            raise bad_archive("its ZIP64 end record is missing")
        (record,) = struct.unpack_from("<Q", view, locator + 8)
        end = locator - 56
        if end < 0 or data[end:end + 4] != _EOCD64 or record > end:
            raise bad_archive("its ZIP64 end record is corrupt")
        count, size = struct.unpack_from("<QQ", view, end + 32)
    if count > max_entries:
        raise ArchiveTooLarge(f"the zip declares {count} files; at most {max_entries}")
    start = end - size
    if start < 0:
        raise bad_archive("its central directory lies outside the file")
    found: list[Entry] = []
    at = start
    while at < end:
        if data[at:at + 4] != _CENTRAL or at + 46 > end:
            raise bad_archive("its central directory is corrupt")
        flags, method = struct.unpack_from("<2H", view, at + 8)
        compressed, size_, name_length, extra_length, comment_length = struct.unpack_from("<2L3H", view, at + 20)
        name_at = at + 46
        extra_at = name_at + name_length
        next_at = extra_at + extra_length + comment_length
        if next_at > end:
            raise bad_archive("its central directory is corrupt")
        if size_ == 0xFFFFFFFF or compressed == 0xFFFFFFFF:
            size_, compressed = _zip64_sizes(view, extra_at, extra_length, size_, compressed)
        raw = bytes(view[name_at:extra_at])
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        found.append(Entry(len(found), name, size_, compressed, method, bool(flags & 0x1)))
        if len(found) > max_entries:
            raise ArchiveTooLarge(f"the zip holds more than {max_entries} files")
        at = next_at
    return found


def _zip64_sizes(view: memoryview, at: int, length: int, size: int, compressed: int) -> tuple[int, int]:
    end = at + length
    while at + 4 <= end:
        tag, tag_length = struct.unpack_from("<2H", view, at)
        if tag == 0x0001:
            values = iter(struct.unpack_from(f"<{tag_length // 8}Q", view, at + 4))
            try:
                if size == 0xFFFFFFFF:
                    size = next(values)
                if compressed == 0xFFFFFFFF:
                    compressed = next(values)
            except StopIteration:
                break
            return size, compressed
        at += 4 + tag_length
    raise bad_archive("a ZIP64 entry lacks its sizes")


def check(data: bytes, found: list[Entry], entry_limit: int, what: str) -> None:
    """Every limit, from the declared sizes: per entry, in total and as a ratio to the archive's own size."""
    total = 0
    for entry in found:
        if entry.encrypted:
            raise ImageError(f"{entry.name} in the zip is encrypted", code="bad_archive")
        if entry.method not in METHODS:
            raise ImageError(f"{entry.name} in the zip is compressed with method {entry.method}; "
                             f"only stored and deflate are read", code="bad_archive")
        if entry.size > entry_limit:
            raise ArchiveTooLarge(f"{entry.name} in the zip inflates to {entry.size} bytes; a {what} is at most "
                                  f"{entry_limit} bytes")
        total += entry.size
    if total > MAX_INFLATED_BYTES:
        raise ArchiveTooLarge(f"the zip inflates to {total} bytes; at most {MAX_INFLATED_BYTES}")
    if total > RATIO_FREE_BYTES and total > MAX_RATIO * len(data):
        raise ArchiveTooLarge(f"the zip of {len(data)} bytes inflates to {total} bytes, more than {MAX_RATIO} "
                              f"times its size: send masks as PNG (or compressed TIFF), or one label image")


def open_archive(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # zipfile raises many types for a corrupt directory; all mean the same here
        raise bad_archive(str(exc) or type(exc).__name__) from None


def read(archive: zipfile.ZipFile, entry: Entry) -> bytes:
    """One entry's bytes, at most its declared size; a corrupt entry (bad CRC, broken stream) is a 400."""
    try:
        info = archive.infolist()[entry.index]
        if info.orig_filename != entry.name:
            raise zipfile.BadZipFile("its directory changed while being read")
        with archive.open(info) as stream:
            return stream.read(entry.size + 1)
    except Exception as exc:  # bad CRC, a broken deflate stream, a forged local header...: all mean the same here
        raise ImageError(f"{entry.name} in the zip is corrupt: {exc}", code="bad_archive") from None


def files(found: list[Entry]) -> list[Entry]:
    """Entries that are files, not folders or hidden files (macOS adds __MACOSX/ and ._ files)."""
    return [e for e in found if not e.name.endswith("/") and not any(
        part.startswith(".") or part == "__MACOSX" for part in e.name.split("/"))]
