"""Polling a folder tree for image files, and deciding when each one is completely written.

A file is *settled* once its size and modification time have stayed the same across polls
spanning at least `settle` seconds of this process's own clock (the instrument's clock and the
file's mtime are never compared with ours, so a skewed network share cannot make a half-written
file look old).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class FileInfo:
    relative: str      # posix path relative to the watched folder
    path: Path
    size: int
    mtime_ns: int

    @property
    def signature(self) -> tuple[int, int]:
        return self.size, self.mtime_ns


def is_candidate(name: str) -> bool:
    # Dot files include macOS resource forks (._A01_s1_w1.tif) and editors' temporary copies.
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def list_images(root: Path) -> list[FileInfo]:
    """Every image file under `root` (subfolders too, hidden folders skipped), sorted by path."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            if not is_candidate(name):
                continue
            path = Path(folder, name)
            try:
                st = path.stat()
            except OSError:  # removed between listing and stat
                continue
            if not os.path.isfile(path):
                continue
            found.append(FileInfo(path.relative_to(root).as_posix(), path, st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda f: f.relative)


class SettleTracker:
    """Remembers when each file's (size, mtime) was first seen; reports the ones unchanged long enough."""

    def __init__(self, settle: float, clock=time.monotonic):
        self.settle = settle
        self.clock = clock
        self._since: dict[str, tuple[tuple[int, int], float]] = {}

    def update(self, files: list[FileInfo]) -> tuple[list[FileInfo], list[FileInfo]]:
        """Feed one poll's listing; returns (settled, still_changing). Files gone from the listing are forgotten."""
        now = self.clock()
        settled, changing, seen = [], [], set()
        for info in files:
            seen.add(info.relative)
            previous = self._since.get(info.relative)
            if previous is None or previous[0] != info.signature:
                self._since[info.relative] = (info.signature, now)
                since = now
            else:
                since = previous[1]
            (settled if now - since >= self.settle else changing).append(info)
        for gone in set(self._since) - seen:
            del self._since[gone]
        return settled, changing

    def forget(self, relative: str) -> None:
        self._since.pop(relative, None)
