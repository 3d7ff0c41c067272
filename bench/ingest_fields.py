"""Rate of `nucleus ingest --nuclear-channel` over a folder of Opera-named 2-channel fields, against the API
served over HTTP in this process (SQLite, local object store, file-system broker; nothing segments).

    .venv/bin/python bench/ingest_fields.py [--fields 48] [--size 1024]

Each field is stacked, uploaded, fully decoded and stored by the server before the next goes, so the figure
is the ingester's and the API's work together on this machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


import numpy as np
import tifffile
from click.testing import CliRunner

from nucleus.commands.ingest import ingest
from testkit.served import served_api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=12)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ingest-fields-"))
    watched = root / "plate"
    watched.mkdir()
    rng = np.random.default_rng(0)
    for i in range(args.fields):
        for channel in (1, 2):
            plane = rng.integers(0, 4000, (args.size, args.size), dtype=np.uint16)
            tifffile.imwrite(watched / f"r01c{i % 24 + 1:02d}f{i // 24 + 1:02d}p01-ch{channel}.tiff", plane)
    with served_api(root / "server") as harness:
        token = harness.token("uploader")
        started = time.perf_counter()
        result = CliRunner().invoke(ingest, ["--watch", str(watched), "--experiment", "bench", "--server",
                                             harness.http_url, "--state", str(root / "state.json"), "--settle", "0",
                                             "--once", "--nuclear-channel", "ch1"], env={"NUCLEUS_TOKEN": token})
        seconds = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(result.output)
    megabytes = args.fields * 2 * args.size * args.size * 2 / 2**20
    print(f"{args.fields} fields x 2 channels {args.size}x{args.size} (16-bit, {megabytes:.0f} MiB): {seconds:.1f} s, "
          f"{args.fields / seconds:.1f} fields/s, {megabytes / seconds:.0f} MiB/s")


if __name__ == "__main__":
    main()
