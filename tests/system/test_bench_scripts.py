"""The accuracy benchmarks run as documented (on a couple of images: their figures are for bench/, not tests)."""
import json
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from shared.domain.model.segmenter import weights_version
from testkit.weights import shipped_weights

ROOT = Path(__file__).resolve().parents[2]


def run_script(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_accuracy_prints_the_methods_and_speed(tmp_path):
    candidate = tmp_path / "unresized.pt"  # another weights file (another version) to score against the shipped one
    candidate.write_bytes(shipped_weights(diameter=None))
    plot = tmp_path / "out-of-source.png"
    out = run_script("bench/accuracy.py", "--limit", "2", "--compare-views", "2", "--against", str(candidate),
                     "--plot", str(plot))
    for method in ("seeded watershed", "connected components", "classical threshold", "seeded watershed, 2 views"):
        assert re.search(method + r".*\s0\.\d{3}\s", out), out
    # The out-of-source table: tests/data's two Kromp test images, by their test class, beside the DSB split, for
    # the shipped model (A), the classical baseline (B) and the other weights (C).
    version = weights_version(candidate.read_bytes())
    assert re.search(r"C: U-Net \+ seeded watershed \(" + version, out), out
    assert re.search(r"A AP@0.5\s+B AP@0.5\s+C AP@0.5\s+A DSB", out), out
    for group in ("DSB2018 validation, all", "Kromp test, GNB-I", "Kromp test, GNB-II", "Kromp test, all"):
        assert re.search(re.escape(group) + r"\s+\d+(\s+[01]\.\d{3}){3}\s", out), out
    assert re.search(r"256x256: median \d+\.\d{3} s", out), out
    with Image.open(plot) as drawn:  # the out-of-source table drawn as bar charts
        assert drawn.format == "PNG" and drawn.width > 800 and drawn.height > 300


def test_tune_postprocess_ranks_the_grid_on_training_images():
    out = run_script("bench/tune_postprocess.py", "--images", "2", "--top", "3")
    assert out.startswith("2 training images"), out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert len(rows) == 3
    ranked = [(max(float(row[7].rstrip("%")) / 100, 0.05), -float(row[4])) for row in rows]  # count error, DSB
    assert ranked == sorted(ranked) and all(0 <= -dsb <= 1 for _, dsb in ranked)


def test_scale_builds_an_experiment_and_times_history_plots_and_exports(tmp_path, pg_url):
    """bench/scale.py at a small size on the machine's PostgreSQL (its figures at full size are for bench/)."""
    figures_path = tmp_path / "scale.json"
    out = run_script("bench/scale.py", "--images", "300", "--nuclei", "6000", "--repeat", "1",
                     "--json", str(figures_path))
    assert re.search(r"built 300 images and 6000 nuclei in \d+\.\d s", out), out
    figures = json.loads(figures_path.read_text())
    for what in ("first page", "condition", "well", "status", "deep page"):
        assert figures["latency_ms"][f"api results, {what}"]["median"] > 0
        assert figures["latency_ms"][f"page, {what}"]["median"] > 0
    assert {Path(e["path"]).name: e["rows"] for e in figures["exports"]} == {
        "nuclei.csv": 6000, "nuclei.parquet": 6000, "results?format=csv": 300}
    assert all(e["rss_peak_mb"] >= e["rss_before_mb"] > 0 for e in figures["exports"])
