"""The model-side command line, run as a user runs it: `nucleus segment`, `nucleus evaluate`, `nucleus train`."""
import csv
import json
import shutil

import numpy as np
import pytest
import tifffile

from testkit.cli import run



@pytest.fixture
def dsb_dir():
    from testkit import data

    return data.dsb_dir()


@pytest.fixture
def two_images(tmp_path, dsb_samples):
    """Two real images under unusual names in different folders."""
    (tmp_path / "plate 1").mkdir()
    (tmp_path / "other").mkdir()
    first = tmp_path / "plate 1" / "A01 site-1.png"
    second = tmp_path / "other" / "x.y.z.png"
    shutil.copy(dsb_samples[0].path, first)
    shutil.copy(dsb_samples[1].path, second)
    return [(first, dsb_samples[0].count), (second, dsb_samples[1].count)]


def test_segment_writes_labels_tables_and_summary(tmp_path, two_images):
    out = tmp_path / "results" / "nested"
    run("segment", *[p for p, _ in two_images], "--out", out)
    with (out / "summary.csv").open() as fh:
        summary = {row["image"]: row for row in csv.DictReader(fh)}
    for path, true_count in two_images:
        labels = tifffile.imread(out / f"{path.stem}_labels.tif")
        assert labels.dtype in (np.uint16, np.uint32)
        assert labels.shape == (256, 256) or labels.ndim == 2
        count = len(np.unique(labels)) - 1
        with (out / f"{path.stem}_nuclei.csv").open() as fh:
            nuclei = list(csv.DictReader(fh))
        assert len(nuclei) == count == int(summary[path.stem]["count"])
        assert {"area", "centroid_x", "integrated_intensity", "solidity"} <= set(nuclei[0])
        assert abs(count - true_count) <= max(3, 0.35 * true_count), (path.name, count, true_count)
        assert summary[path.stem]["model_version"]


def test_segment_refuses_two_inputs_with_one_stem_before_any_work(tmp_path, dsb_samples):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(dsb_samples[0].path, tmp_path / "a" / "same.png")
    shutil.copy(dsb_samples[1].path, tmp_path / "b" / "same.png")
    proc = run("segment", tmp_path / "a" / "same.png", tmp_path / "b" / "same.png", "--out", tmp_path / "out", check=False)
    assert proc.returncode != 0
    assert "same" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_segment_reports_a_corrupt_image_and_keeps_going(tmp_path, dsb_samples):
    bad = tmp_path / "broken.png"
    bad.write_bytes(dsb_samples[0].path.read_bytes()[:300])
    proc = run("segment", bad, dsb_samples[1].path, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 1
    assert "broken.png" in proc.stderr
    with (tmp_path / "out" / "summary.csv").open() as fh:
        rows = {r["image"]: r for r in csv.DictReader(fh)}
    assert rows["broken"]["error"] and not rows["broken"]["count"]
    assert int(rows[dsb_samples[1].path.stem]["count"]) > 0


def test_evaluate_reads_both_layouts_alike(tmp_path, dsb_dir):
    competition = dsb_dir / "dsb-layout-sample"
    pairs = tmp_path / "pairs"
    (pairs / "images").mkdir(parents=True)
    (pairs / "labels").mkdir()
    for sample in sorted(competition.iterdir()):
        shutil.copy(dsb_dir / "images" / f"{sample.name}.png", pairs / "images")
        shutil.copy(dsb_dir / "labels" / f"{sample.name}.png", pairs / "labels")
    a = json.loads(run("evaluate", "--data", competition, "--json").stdout)
    b = json.loads(run("evaluate", "--data", pairs, "--json").stdout)
    assert a["metrics"]["all"]["images"] == b["metrics"]["all"]["images"] == 4
    for key in ("pixel_iou", "ap50", "dsb_score"):
        assert 0 <= a["metrics"]["all"][key] <= 1
        assert a["metrics"]["all"][key] == pytest.approx(b["metrics"]["all"][key], abs=0.02)
    table = run("evaluate", "--data", competition).stdout
    assert "AP@0.5" in table and "all" in table


def test_train_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    common = ["--out", out, "--batch", "2", "--crop", "64", "--base", "4", "--limit", "4", "--eval-images", "2",
              "--eval-every", "2", "--checkpoint-every", "1", "--kind-weight", "brightfield", "5"]
    run("train", "--steps", "2", *common)
    first = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in first] == [2]
    exported = run("train", "--steps", "4", *common, "--export", tmp_path / "small.pt")
    # four training images are too few to fit a size model: the weights say how they measure nuclei instead
    assert "without a size model" in exported.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 4]
    assert (out / "curves.png").stat().st_size > 1000
    import torch

    recipe = torch.load(tmp_path / "small.pt", weights_only=True)["extra"]["config"]
    assert dict(recipe["kind_weights"]) == {"fluorescence": 1.0, "stained-tissue": 2.0, "stained": 2.0,
                                            "brightfield": 5.0}
    # the exported weights segment an image through the normal path
    from shared.domain.model.segmenter import Segmenter

    segmenter = Segmenter(tmp_path / "small.pt")
    labels = segmenter.segment(np.zeros((40, 40), np.uint8))
    assert labels.shape == (40, 40)
