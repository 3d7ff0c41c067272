"""The accuracy benchmarks run as documented (on a couple of images: their figures are for bench/, not tests)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_accuracy_prints_the_methods_and_speed():
    out = run_script("bench/accuracy.py", "--limit", "2", "--compare-views", "2")
    for method in ("seeded watershed", "connected components", "classical threshold", "seeded watershed, 2 views"):
        assert re.search(method + r".*\s0\.\d{3}\s", out), out
    assert re.search(r"256x256: median \d+\.\d{3} s", out), out


def test_tune_postprocess_ranks_the_grid_on_training_images():
    out = run_script("bench/tune_postprocess.py", "--images", "2", "--top", "3")
    assert out.startswith("2 training images"), out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert len(rows) == 3
    ranked = [(max(float(row[7].rstrip("%")) / 100, 0.05), -float(row[4])) for row in rows]  # count error, DSB
    assert ranked == sorted(ranked) and all(0 <= -dsb <= 1 for _, dsb in ranked)
