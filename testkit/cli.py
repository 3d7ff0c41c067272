"""Running the `nucleus` command line in a child process, as a user would."""
from __future__ import annotations

import subprocess
import sys

NUCLEUS = [sys.executable, "-m", "nucleus.cli"]


def run(*args, cwd=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*NUCLEUS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"nucleus {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
