"""`nucleus dataset build` writes one training set from several source folders: DSB2018 with its fixed validation
split marked (trained on never, validated on), the Kromp set's train split only (its test split is for measuring),
NuInsSeg's YOLO copy less its test split, plain images/ + labels/ folders; one index.csv row per image with its
source, kind and split."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nucleus.cli import main
from shared.domain.datasets.labelled import default_data_root, iter_labelled, training_names, validation_names
from shared.domain.datasets.sources import KROMP_DIRNAME, iter_kromp, kromp_images
from testkit import data

DESCRIPTION_HEADER = ("Image_Name;Diagnosis;Preparation;Train-/Testset split;Testset class;Magnification;Modality;"
                      "Device;Software;Mean BG signal;Mean FG signal;Signal/Noise;S/N Class")


def write_pair(root, name, image, labels):
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(labels.astype(np.uint16)).save(root / "labels" / f"{name}.png")


def blobs(n: int, size: int = 32) -> np.ndarray:
    labels = np.zeros((size, size), np.uint16)
    for i in range(n):
        labels[4 + 8 * i: 8 + 8 * i, 4:10] = i + 1
    return labels


@pytest.fixture
def fake_sources(tmp_path):
    """A DSB-like folder (one of its names in the fixed validation split) and a Kromp-like folder (2 train, 2 test)."""
    dsb, kromp = tmp_path / "dsb", tmp_path / "kromp"
    for root in (dsb, kromp):
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
    held_out = validation_names()[0]
    dsb_rows = [("fluo_a", "white", "black", 2), ("tissue_b", "purple", "purple", 3), (held_out, "white", "black", 1)]
    for name, fg, bg, n in dsb_rows:
        write_pair(dsb, name, np.full((32, 32, 4), 200, np.uint8), blobs(n))
    (dsb / "index.csv").write_text("image_id,width,height,nuclei,foreground,background\n"
                                   + "".join(f"{name},32,32,{n},{fg},{bg}\n" for name, fg, bg, n in dsb_rows))
    kromp_rows = [("Tissue_0", "train", "-", 1), ("Tissue_1", "train", "-", 2), ("Tissue_2", "test", "NB-I", 3),
                  ("Cells_3", "test", "TS", 1)]
    for name, _, _, n in kromp_rows:
        write_pair(kromp, name, np.full((32, 32), 30, np.uint8), blobs(n))
    (kromp / "image_description.csv").write_text(DESCRIPTION_HEADER + "\n" + "".join(
        f"{name};x;tissue section;{split};{cls};63x;FM;dev;sw;2,5;83,6;34,1;>=4,<40\n"
        for name, split, cls, _ in kromp_rows))
    return dsb, kromp, held_out


def read_index(out):
    with (out / "index.csv").open() as fh:
        return {row["image_id"]: row for row in csv.DictReader(fh)}


def test_build_from_fake_sources_keeps_training_images_only(fake_sources, tmp_path):
    dsb, kromp, held_out = fake_sources
    out = tmp_path / "built"
    result = CliRunner().invoke(main, ["dataset", "build", "--source", f"dsb2018={dsb}", "--source", f"kromp={kromp}",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 images (1 of them the DSB2018 validation split), 9 nuclei" in result.output
    rows = read_index(out)
    assert set(rows) == {"fluo_a", "tissue_b", held_out, "Tissue_0", "Tissue_1"}  # no Kromp test image
    assert rows[held_out]["split"] == "validation" and rows["fluo_a"]["split"] == rows["Tissue_0"]["split"] == "train"
    assert set(training_names(out)) == {"fluo_a", "tissue_b", "Tissue_0", "Tissue_1"}  # what nucleus train trains on
    row = rows["fluo_a"]
    assert (row["source"], row["kind"], row["nuclei"]) == ("dsb2018", "fluorescence", "2")
    assert (rows["tissue_b"]["kind"], rows["tissue_b"]["nuclei"]) == ("stained-tissue", "3")
    row = rows["Tissue_1"]
    assert (row["source"], row["kind"], row["width"]) == ("kromp", "fluorescence", "32")
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(rows)
    # The built set reads back through the ordinary loader with the same types.
    loaded = {item.name: item for item in iter_labelled(out)}
    assert loaded["tissue_b"].kind == "stained-tissue" and loaded["Tissue_0"].kind == "fluorescence"
    assert int(loaded["tissue_b"].labels.max()) == 3


def test_build_refuses_clashing_names_a_used_folder_and_unknown_sources(fake_sources, tmp_path):
    dsb, kromp, _ = fake_sources
    runner = CliRunner()
    clash = runner.invoke(main, ["dataset", "build", "--source", f"folder={dsb}", "--source", f"dsb2018={dsb}",
                                 "--out", str(tmp_path / "a")])
    assert clash.exit_code == 1 and "is in both folder and dsb2018" in clash.output
    assert not (tmp_path / "a" / "index.csv").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    refused = runner.invoke(main, ["dataset", "build", "--source", f"kromp={kromp}", "--out", str(used)])
    assert refused.exit_code == 1 and "not empty" in refused.output and (used / "keep.txt").read_text() == "mine"
    unknown = runner.invoke(main, ["dataset", "build", "--source", f"monuseg={dsb}", "--out", str(tmp_path / "b")])
    assert unknown.exit_code == 2 and "KIND=DIR" in unknown.output


@pytest.fixture
def real_kromp_subset():
    """tests/data's Kromp subset (two train and two test images of the real set, cut) and its description rows."""
    root = default_data_root() / KROMP_DIRNAME
    return root, kromp_images(root)


def test_build_from_real_files(real_kromp_subset, tmp_path):
    kromp, chosen = real_kromp_subset
    dsb = data.dsb_dir()
    few = tmp_path / "dsb"
    for sub in ("images", "labels"):
        (few / sub).mkdir(parents=True)
    held = validation_names()
    names = [held[0]] + [line.split(",")[0] for line in (dsb / "index.csv").read_text().splitlines()[1:]
                         if line.split(",")[0] not in held][:2]
    for name in names:
        for sub in ("images", "labels"):
            (few / sub / f"{name}.png").symlink_to(dsb / sub / f"{name}.png")
    index = (dsb / "index.csv").read_text().splitlines()
    (few / "index.csv").write_text("\n".join([index[0]] + [l for l in index[1:] if l.split(",")[0] in names]) + "\n")
    out = tmp_path / "built"
    result = CliRunner().invoke(main, ["dataset", "build", "--source", f"dsb2018={few}", "--source", f"kromp={kromp}",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_index(out)
    train = [im.name for im in chosen if im.split == "train"]
    assert set(rows) == set(names) | set(train)
    assert [n for n in rows if rows[n]["split"] == "validation"] == [names[0]]
    for name in train:
        labels = np.asarray(Image.open(kromp / "labels" / f"{name}.png"))
        assert int(rows[name]["nuclei"]) == len(np.unique(labels[labels > 0]))
        assert (out / "images" / f"{name}.png").read_bytes() == (kromp / "images" / f"{name}.png").read_bytes()
    shutil.rmtree(out)


def test_kromp_split_and_classes_come_from_its_description():
    kromp = default_data_root() / KROMP_DIRNAME  # tests/data's subset: its README lists the rows
    images = kromp_images(kromp)
    assert [(im.name, im.split, im.test_class, im.magnification) for im in images] == [
        ("Ganglioneuroblastoma_0", "train", "-", "20x"), ("Ganglioneuroblastoma_1", "train", "-", "20x"),
        ("Ganglioneuroblastoma_10", "test", "GNB-II", "63x"), ("Ganglioneuroblastoma_4", "test", "GNB-I", "20x")]
    assert images[2].snr == 3.6 and images[3].modality == "FM"
    test = list(iter_kromp(kromp, "test"))
    assert [(im.name, im.kind, int(im.labels.max())) for im in test] == [
        ("Ganglioneuroblastoma_10", "GNB-II", 9), ("Ganglioneuroblastoma_4", "GNB-I", 40)]
    train = next(iter_kromp(kromp, "train", limit=1))
    assert train.kind == "fluorescence" and train.image.shape[:2] == (320, 320)


def test_yolo_polygons_become_instance_labels():
    from shared.domain.datasets.sources import yolo_polygon_labels

    text = "0 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4\n0 0.5 0.5 0.9 0.5 0.9 0.9\n0 0.2 0.2\n"  # square, triangle, too short
    labels = yolo_polygon_labels(text, (20, 40))
    assert labels.shape == (20, 40) and labels.dtype == np.uint16
    assert set(np.unique(labels)) == {0, 1, 2}
    assert labels[5, 10] == 1 and labels[17, 34] == 2 and labels[0, 0] == 0  # y from the height, x from the width
    with pytest.raises(ValueError, match="odd number"):
        yolo_polygon_labels("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4", (10, 10))


def test_build_takes_nuinsseg_train_and_val_but_not_test(tmp_path):
    root = tmp_path / "nuinsseg" / "datasets"
    for split, names in (("train", ["human_liver_1", "mouse_heart_2"]), ("val", ["human_liver_3"]),
                         ("test", ["human_liver_4"])):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir()
        for name in names:
            Image.fromarray(np.full((32, 48, 3), 220, np.uint8)).save(root / split / "images" / f"{name}.png")
            (root / split / "labels" / f"{name}.txt").write_text(
                "0 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n0 0.6 0.6 0.9 0.6 0.9 0.9 0.6 0.9\n")
    out = tmp_path / "built"
    result = CliRunner().invoke(main, ["dataset", "build", "--source", f"nuinsseg-yolo={root.parent}",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_index(out)
    assert set(rows) == {"human_liver_1", "mouse_heart_2", "human_liver_3"}
    assert {(r["source"], r["kind"], r["nuclei"], r["width"]) for r in rows.values()} == {
        ("nuinsseg-yolo", "stained-tissue", "2", "48")}
    labels = np.asarray(Image.open(out / "labels" / "human_liver_1.png"))
    assert labels.shape == (32, 48) and labels.max() == 2
