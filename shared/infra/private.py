"""Privacy at rest: the data directory and everything the service creates in it belong to the
service's user alone (folders 0700, files 0600). `nucleus up` sets a matching umask for itself and
every process it starts; the places that create the data directory's files and folders also set
these modes themselves, so a service started any other way (a test harness, a CLI command) agrees."""
from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def use_private_umask() -> None:
    os.umask(PRIVATE_UMASK)


def private_dir(path: str | os.PathLike) -> Path:
    """Create `path` and any missing parents at 0700 (existing folders are left as they are)."""
    target = Path(path)
    missing, folder = [], target
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode passes through the umask; make it exact
    return target


def private_file(path: str | os.PathLike) -> Path:
    """Create `path` empty at 0600 unless it exists (then it is left as it is)."""
    path = Path(path)
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    return path


def open_private(path: str | os.PathLike, mode: str = "wb"):
    """open() for a new file in the data directory, created at 0600."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    return os.fdopen(os.open(path, flags, FILE_MODE), mode)
