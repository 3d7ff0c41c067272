"""Time to stack one instrument field into a multi-channel OME-TIFF (nucleus.ingest.stacking), as the
ingester does per field with --nuclear-channel: read each channel TIFF, stack, write the OME-TIFF.

    .venv/bin/python bench/ingest_stacking.py [--size 2160] [--channels 4] [--repeat 3]

Prints the per-field time (best of --repeat), the channel files' total size and the stacked size.
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
import tifffile

from nucleus.ingest.stacking import stack_channels


def channel_file(rng: np.random.Generator, size: int, seed: int) -> bytes:
    """A 16-bit camera-like plane: noise around a background with bright blobs."""
    plane = rng.normal(300 + 50 * seed, 30, (size, size)).clip(0, 65535).astype(np.uint16)
    for y, x in rng.integers(20, size - 20, (size // 20, 2)):
        plane[y - 8:y + 8, x - 8:x + 8] += 2000
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, plane)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    files = [(f"ch{c + 1}", f"r01c01f01p01-ch{c + 1}.tiff", channel_file(rng, args.size, c))
             for c in range(args.channels)]
    times, stacked = [], b""
    for _ in range(args.repeat):
        started = time.perf_counter()
        stacked = stack_channels(files)
        times.append(time.perf_counter() - started)
    print(f"field {args.size}x{args.size} x {args.channels} channels: stacked in {min(times):.3f} s (best of "
          f"{args.repeat}); channel files {sum(len(f[2]) for f in files) / 2**20:.1f} MiB -> "
          f"OME-TIFF {len(stacked) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
