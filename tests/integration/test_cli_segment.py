"""`nucleus segment` as labs use it: folders (and their subfolders), --overlay, --format, --diameter; every
mistake refused before the model loads; `nucleus --version` and `nucleus --help` without importing the commands."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from importlib.metadata import version

import numpy as np
import pytest
import roifile
import tifffile
from click.testing import CliRunner
from PIL import Image

from nucleus.cli import main


def _nuclei_image(seed: int) -> np.ndarray:
    """A 96x96 16-bit fluorescence-like image: bright discs of about 16 px on a noisy dark background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:96, :96]
    image = rng.normal(200, 30, (96, 96))
    for cy, cx in [(20, 20), (24, 70), (60, 30), (70, 72), (48, 50)]:
        image[(rows - cy) ** 2 + (cols - cx) ** 2 < 64] += 3000
    return np.clip(image, 0, 65535).astype(np.uint16)


@pytest.fixture
def tree(tmp_path):
    """plate/a.tif, plate/b.png, plate/well2/c.tif, plus files a folder search must skip."""
    root = tmp_path / "plate"
    (root / "well2").mkdir(parents=True)
    tifffile.imwrite(root / "a.tif", _nuclei_image(0))
    Image.fromarray((_nuclei_image(1) // 16).astype(np.uint8)).save(root / "b.png")
    tifffile.imwrite(root / "well2" / "c.tif", _nuclei_image(2))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.tif").write_bytes(b"macOS resource fork")
    return root


def _rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_a_folder_with_every_format_and_the_overlay(tree, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["segment", str(tree), "--out", str(out), "--overlay", "--diameter", "16",
                                       "--format", "roiset,geojson,ome-tiff"])
    assert result.exit_code == 0, result.output
    summary = _rows(out / "summary.csv")
    assert sorted(r["image"] for r in summary) == ["a", "b"]  # not the subfolder's c without --recursive
    assert not (out / "a_labels.tif").exists()  # tif was not asked for
    for stem in ("a", "b"):
        nuclei = _rows(out / f"{stem}_nuclei.csv")
        assert len(nuclei) > 0
        labels_in_table = sorted(int(r["label"]) for r in nuclei)
        rois = roifile.roiread(out / f"{stem}_RoiSet.zip")
        assert sorted(int(roi.name) for roi in rois) == labels_in_table
        features = json.loads((out / f"{stem}_nuclei.geojson").read_text())["features"]
        assert sorted(f["properties"]["measurements"]["label"] for f in features) == labels_in_table
        labels = tifffile.imread(out / f"{stem}_labels.ome.tif")
        assert labels.shape == (96, 96) and sorted(set(np.unique(labels)) - {0}) == labels_in_table
        with Image.open(out / f"{stem}_overlay.png") as png:
            assert png.size == (96, 96)


def test_summary_names_that_look_like_formulas_stay_text(tmp_path):
    folder = tmp_path / "plate"
    folder.mkdir()
    tifffile.imwrite(folder / "=1+2.tif", _nuclei_image(0))
    tifffile.imwrite(folder / "@SUM.tif", _nuclei_image(1))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["segment", str(folder), "--out", str(out), "--diameter", "16"])
    assert result.exit_code == 0, result.output
    summary = _rows(out / "summary.csv")
    assert sorted(r["image"] for r in summary) == ["'=1+2", "'@SUM"]
    assert all(r["path"].startswith(str(folder)) for r in summary)  # a path cell not beginning a formula: as is


def test_recursive_finds_subfolders_and_skips_its_own_output_folder(tree):
    out = tree / "results"  # inside the searched folder: a rerun must not segment its outputs
    for _ in range(2):
        result = CliRunner().invoke(main, ["segment", str(tree), "--recursive", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert sorted(r["image"] for r in _rows(out / "summary.csv")) == ["a", "b", "c"]
    assert (out / "c_labels.tif").exists() and (out / "c_nuclei.csv").exists()


REFUSALS = {
    "unknown format": (["{tree}", "--format", "tif,imagej"], "imagej is not a format"),
    "zero diameter": (["{tree}", "--diameter", "0"], "--diameter"),
    "negative diameter": (["{tree}", "--diameter", "-4"], "--diameter"),
    "missing input": (["{tree}/nothing.tif"], "does not exist"),
    "missing weights": (["{tree}", "--weights", "{tree}/none.pt"], "--weights"),
    "folder without images": (["{tree}/empty"], "no images in folder"),
    "a stem twice": (["{tree}", "{tree}/again", "--recursive"], "a: "),
}


def test_mistakes_are_refused_before_the_model_loads(tree, tmp_path):
    """Run in a fresh interpreter: that torch was never imported shows that no model started loading."""
    (tree / "empty").mkdir()
    (tree / "again").mkdir()
    tifffile.imwrite(tree / "again" / "a.tif", _nuclei_image(3))
    cases = {name: [a.format(tree=tree) for a in args] + ["--out", str(tmp_path / name.replace(" ", "_"))]
             for name, (args, _) in REFUSALS.items()}
    script = textwrap.dedent(f"""
        import json, sys
        from click.testing import CliRunner
        from nucleus.cli import main
        answers = {{}}
        for name, args in {cases!r}.items():
            result = CliRunner().invoke(main, ["segment", *args])
            answers[name] = [result.exit_code, result.output]
        answers["torch imported"] = "torch" in sys.modules
        print(json.dumps(answers))
    """)
    answers = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                        text=True, timeout=120).stdout)
    assert answers.pop("torch imported") is False
    for name, (_args, message) in REFUSALS.items():
        code, output = answers[name]
        assert code == 2 and message in output, (name, output)
        assert not (tmp_path / name.replace(" ", "_")).exists(), name  # nothing written
    assert f"{tree}/again/a.tif" in answers["a stem twice"][1] and f"{tree}/a.tif" in answers["a stem twice"][1]


def test_version_and_help_import_no_command():
    script = ("import sys, io, contextlib\nfrom nucleus.cli import main\n"
              "for args in (['--version'], ['--help']):\n"
              "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
              "print([m for m in sys.modules if m.startswith('nucleus.commands.') or m in ('torch', 'flask')])")
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0] == f"nucleus {version('nucleus')}"
    assert "segment" in result.stdout and "Commands:" in result.stdout
    assert lines[-1] == "[]"
