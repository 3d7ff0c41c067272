"""Whole-process times of the command line: `nucleus --help`, and `nucleus segment` on 1 and on N images,
start-up included, each run `--runs` times after one uncounted warm-up: wall seconds (min / median / max) and
the median CPU seconds (user + system; steadier than wall time when other work shares the cores).

    .venv/bin/python bench/cli_startup.py                      # N = 10 synthetic 256x256 images, 5 runs each
    .venv/bin/python bench/cli_startup.py -n 100 --runs 3
    .venv/bin/python bench/cli_startup.py --baseline /tmp/old  # also an older source tree (git archive REV | tar -x)

The images are synthetic 16-bit fluorescence-like fields (bright discs on noise), so the figures need no data
set. `nucleus segment` writes into a fresh temporary folder each run. The ONNX graph cache (see
NUCLEUS_GRAPH_CACHE_DIR) is warmed by the warm-up run, as it is after a first use; `--cold-cache` gives each run an
empty one instead.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:size, :size]
    paths = []
    for i in range(n):
        image = rng.normal(200, 30, (size, size))
        for cy, cx in rng.integers(12, size - 12, (size * size // 2000, 2)):
            image[(rows - cy) ** 2 + (cols - cx) ** 2 < rng.integers(36, 120)] += rng.integers(1500, 4000)
        path = folder / f"field{i:04d}.tif"
        tifffile.imwrite(path, np.clip(image, 0, 65535).astype(np.uint16))
        paths.append(path)
    return paths


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict, cwd: Path, before=None) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `command`."""
    if before:
        before()
    cpu, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, _children_cpu() - cpu


def measure(label: str, command: list[str], env: dict, cwd: Path, runs: int, before=None) -> None:
    timed(command, env, cwd, before)  # warm-up: file cache, and the graph cache unless --cold-cache
    walls, cpus = zip(*(timed(command, env, cwd, before) for _ in range(runs)))
    print(f"{label:<40} {min(walls):7.3f} {statistics.median(walls):7.3f} {max(walls):7.3f}"
          f" {statistics.median(cpus):9.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=int(os.environ.get("NUCLEUS_BENCH_IMAGES", "10")),
                        help="images in the N-image run (default 10, or NUCLEUS_BENCH_IMAGES)")
    parser.add_argument("--runs", type=int, default=5, help="counted runs per command (default 5)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--baseline", type=Path, help="an older source tree to time the same way (on PYTHONPATH)")
    parser.add_argument("--cold-cache", action="store_true", help="an empty ONNX graph cache for every run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cli-startup-"))
    try:
        many = work / "images"
        many.mkdir()
        images = write_images(many, args.n, args.size)
        trees = [("now", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.runs} runs after 1 warm-up; "
              f"{args.size}x{args.size} images")
        print(f"{'whole process, seconds':<40} {'wall min':>7} {'median':>7} {'max':>7} {'cpu median':>9}")
        for name, tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree), "NUCLEUS_GRAPH_CACHE_DIR": str(work / f"graphs-{name}")}
            cache = Path(env["NUCLEUS_GRAPH_CACHE_DIR"])
            before = (lambda: shutil.rmtree(cache, ignore_errors=True)) if args.cold_cache else None
            nucleus = [sys.executable, "-m", "nucleus.cli"]
            out = work / "out"
            measure(f"{name}: nucleus --help", nucleus + ["--help"], env, tree, args.runs)
            measure(f"{name}: nucleus segment, 1 image", nucleus + ["segment", str(images[0]), "--out", str(out)],
                    env, tree, args.runs, before)
            measure(f"{name}: nucleus segment, {args.n} images", nucleus + ["segment", str(many), "--out", str(out)]
                    if name == "now" else nucleus + ["segment", *map(str, images), "--out", str(out)],
                    env, tree, args.runs, before)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
