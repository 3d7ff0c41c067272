"""Labelled sets other than DSB2018: the Kromp fluorescence set (its own train/test split and test classes), NuInsSeg
H&E tissue (as published in YOLO polygon layout), and rebuilding one multi-source training set from the folders
they sit in (docs/DATA_CARD.md).

The built set has the common layout (shared.domain.datasets.labelled): OUT/images/<name>.png, OUT/labels/<name>.png and an
OUT/index.csv naming each image's `source`, `kind` and `split`, plus the `foreground`/`background` colour hints the
DSB2018 loader reads, so `nucleus train --data OUT` and shared.domain.datasets.labelled see each image's type.
The DSB2018 fixed validation split goes in marked `validation` (by its names `nucleus train` leaves it out of
training and validates on it, as today); the Kromp test split and the NuInsSeg copy's test split never go in.
"""
from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from shared.domain.datasets.labelled import (LabelledImage, default_data_root, find_image, kind_hints, list_names, load,
                             training_names)
from shared.domain.imaging.imageio import read_image, read_labels

KROMP_DIRNAME = "kromp-sbsst265"
KROMP_DESCRIPTION = "image_description.csv"

# The colour hints shared.domain.datasets.labelled maps to an image type, written back so the built set reads the same way.
HINTS_BY_KIND = {
    "fluorescence": ("white", "black"),
    "stained-tissue": ("purple", "purple"),
    "stained": ("purple", "white"),
    "brightfield": ("black", "white"),
}
INDEX_COLUMNS = ("image_id", "source", "kind", "split", "width", "height", "nuclei", "foreground", "background")


def default_kromp_dir() -> Path:
    return default_data_root() / KROMP_DIRNAME


@dataclass(frozen=True)
class KrompImage:
    name: str
    split: str         # "train" or "test", the dataset's own split
    test_class: str    # GNB-I, NB-II, NC-III, TS, ...; "-" for training images
    magnification: str
    modality: str      # FM (widefield) or LSM (confocal)
    preparation: str
    snr: float | None


def _decimal(text: str) -> float | None:
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return None


def kromp_images(root: Path | None = None) -> list[KrompImage]:
    """The rows of the set's image_description.csv (`;`-separated, decimal commas)."""
    path = Path(root or default_kromp_dir()) / KROMP_DESCRIPTION
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a Kromp S-BSST265 folder")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    out = []
    for row in rows:
        split = row["Train-/Testset split"].strip().lower()
        if split not in ("train", "test"):
            raise ValueError(f"{path}: image {row['Image_Name']!r} has split {split!r}, not train or test")
        out.append(KrompImage(row["Image_Name"].strip(), split, row["Testset class"].strip(),
                              row["Magnification"].strip(), row["Modality"].strip(), row["Preparation"].strip(),
                              _decimal(row.get("Signal/Noise", ""))))
    return out


def kromp_names(root: Path | None = None, split: str = "test") -> list[str]:
    return [im.name for im in kromp_images(root) if im.split == split]


def iter_kromp(root: Path | None = None, split: str = "test", limit: int = 0) -> Iterator[LabelledImage]:
    """The split's images; a test image's `kind` is its test class, a training image's is fluorescence."""
    root = Path(root or default_kromp_dir())
    chosen = [im for im in kromp_images(root) if im.split == split][: limit or None]
    for im in chosen:
        kind = im.test_class if split == "test" else "fluorescence"
        yield load(root, im.name, hints={im.name: kind})


# --- building a multi-source training set -------------------------------------------------------------------


@dataclass
class Entry:
    """One training image of a source: where its files are and what it is. A source whose labels are not label
    images (polygons) gives `make_labels` instead, which draws them for the image's (height, width)."""
    name: str
    image: Path
    labels: Path | None
    kind: str
    make_labels: Callable[[tuple[int, int]], np.ndarray] | None = None
    split: str = "train"  # or "validation": DSB2018's fixed split, which `nucleus train` validates on


def dsb2018_entries(root: Path) -> list[Entry]:
    """The DSB2018 stage-1 training images (pairs layout, with index.csv hints), the fixed validation split marked
    as such: `nucleus train` never trains on it and validates on it, as on the DSB2018 folder itself."""
    root = Path(root)
    if not (root / "images").is_dir():
        raise ValueError(f"{root}: expected images/ and labels/ (the converted DSB2018 set)")
    hints = kind_hints(root)
    training = set(training_names(root))
    entries = []
    for name in list_names(root):
        image, labels = find_image(root / "images", name), find_image(root / "labels", name)
        if image is None or labels is None:
            raise FileNotFoundError(f"{name}: image or label image missing under {root}")
        entries.append(Entry(name, image, labels, hints.get(name) or "other",
                             split="train" if name in training else "validation"))
    return entries


def kromp_entries(root: Path) -> list[Entry]:
    """The Kromp set's own train split only: its test split is for measuring."""
    root = Path(root)
    entries = []
    for name in kromp_names(root, "train"):
        image, labels = find_image(root / "images", name), find_image(root / "labels", name)
        if image is None or labels is None:
            raise FileNotFoundError(f"{name}: image or label image missing under {root}")
        entries.append(Entry(name, image, labels, "fluorescence"))
    return entries


def folder_entries(root: Path) -> list[Entry]:
    """Any images/ + labels/ folder whose every image is a training image; the type is read from index.csv
    hints where there are any, else guessed from the pixels."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise ValueError(f"{root}: expected images/ and labels/")
    hints = kind_hints(root)
    entries = []
    for name in list_names(root):
        image, labels = find_image(root / "images", name), find_image(root / "labels", name)
        if labels is None:
            raise FileNotFoundError(f"{name}: no label image under {root / 'labels'}")
        kind = hints.get(name) or load(root, name, hints={}).kind
        entries.append(Entry(name, image, labels, kind))
    return entries


# Of the NuInsSeg copy in YOLO layout, the splits trained on; its `test` split stays out, to measure H&E tissue.
NUINSSEG_TRAINING_SPLITS = ("train", "val")


def yolo_polygon_labels(text: str, shape: tuple[int, int]) -> np.ndarray:
    """A YOLO segmentation label file (one object a line: class, then x y pairs as fractions of the width and
    height) drawn as a label image; where polygons overlap, the later one wins, as in the DSB2018 conversion."""
    from skimage.draw import polygon

    height, width = shape
    labels = np.zeros(shape, np.uint16)
    n = 0
    for line in text.splitlines():
        values = line.split()
        if len(values) < 7:  # class + at least three points
            continue
        xy = np.asarray(values[1:], dtype=np.float64)
        if len(xy) % 2:
            raise ValueError(f"odd number of polygon coordinates in {line[:40]!r}...")
        rows, cols = polygon(xy[1::2] * height, xy[0::2] * width, shape)
        if len(rows):
            n += 1
            labels[rows, cols] = n
    return labels


def nuinsseg_yolo_entries(root: Path) -> list[Entry]:
    """NuInsSeg (H&E tissue, 31 human and mouse organs, 512x512 at 40x) as published in YOLO segmentation layout:
    ROOT[/datasets]/{train,val,test}/{images/*.png,labels/*.txt}. The train and val splits only."""
    root = Path(root)
    if (root / "datasets").is_dir():
        root = root / "datasets"
    if not all((root / split / "images").is_dir() for split in NUINSSEG_TRAINING_SPLITS):
        raise ValueError(f"{root}: expected train/ and val/ folders of images/ and labels/ (YOLO layout)")
    entries = []
    for split in NUINSSEG_TRAINING_SPLITS:
        for image in sorted((root / split / "images").glob("*.png")):
            label_file = root / split / "labels" / f"{image.stem}.txt"
            if not label_file.exists():
                raise FileNotFoundError(f"{image.stem}: no label file {label_file}")
            entries.append(Entry(image.stem, image, None, "stained-tissue",
                                 make_labels=lambda shape, f=label_file: yolo_polygon_labels(f.read_text(), shape)))
    return entries


def iter_nuinsseg_yolo(root: Path, split: str = "test", limit: int = 0) -> Iterator[LabelledImage]:
    """A split of the NuInsSeg YOLO copy as labelled images; `kind` is the organ (human_liver, mouse_heart, ...)."""
    root = Path(root)
    if (root / "datasets").is_dir():
        root = root / "datasets"
    for image_path in sorted((root / split / "images").glob("*.png"))[: limit or None]:
        image = read_image(image_path)
        labels = yolo_polygon_labels((root / split / "labels" / f"{image_path.stem}.txt").read_text(), image.shape[:2])
        yield LabelledImage(image_path.stem, image, labels, image_path.stem.rsplit("_", 1)[0])


CONVERTERS: dict[str, Callable[[Path], list[Entry]]] = {
    "dsb2018": dsb2018_entries,
    "kromp": kromp_entries,
    "nuinsseg-yolo": nuinsseg_yolo_entries,
    "folder": folder_entries,
}


@dataclass
class BuildReport:
    images: int
    nuclei: int
    by_source: dict[str, int]
    by_kind: dict[str, int]  # training images only
    validation: int


def _write_png_or_copy(src: Path, dst: Path, read: Callable[[Path], np.ndarray], labels: bool) -> np.ndarray:
    array = read(src)
    if src.suffix.lower() == ".png":
        shutil.copyfile(src, dst)
    elif labels:
        if array.max(initial=0) > 65535:
            raise ValueError(f"{src}: more than 65535 nuclei do not fit a 16-bit label PNG")
        Image.fromarray(array.astype(np.uint16)).save(dst)
    else:
        Image.fromarray(array).save(dst)
    return array


def build_training_set(sources: list[tuple[str, Path]], out: Path, progress=None) -> BuildReport:
    """Write every source's training images into OUT (which must be new or empty) with one index.csv.

    `sources` are (converter, folder) pairs, the converter one of CONVERTERS. Names must be unique across
    sources: a clash is an error rather than a silent overwrite."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: give a new folder")
    unknown = [kind for kind, _ in sources if kind not in CONVERTERS]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r}: one of {', '.join(CONVERTERS)}")
    planned: list[tuple[str, Entry]] = []
    seen: dict[str, str] = {}
    for source, folder in sources:
        for entry in CONVERTERS[source](Path(folder)):
            if entry.name in seen:
                raise ValueError(f"image name {entry.name!r} is in both {seen[entry.name]} and {source}")
            seen[entry.name] = source
            planned.append((source, entry))
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    rows, by_source, by_kind, nuclei = [], {}, {}, 0
    for i, (source, entry) in enumerate(planned, start=1):
        image = _write_png_or_copy(entry.image, out / "images" / f"{entry.name}.png", read_image, labels=False)
        if entry.labels is None:
            labels = entry.make_labels(image.shape[:2])
            Image.fromarray(labels).save(out / "labels" / f"{entry.name}.png")
        else:
            labels = _write_png_or_copy(entry.labels, out / "labels" / f"{entry.name}.png", read_labels, labels=True)
        if image.shape[:2] != labels.shape:
            raise ValueError(f"{entry.name}: image {image.shape[:2]} and labels {labels.shape} differ in size")
        count = len(np.unique(labels[labels > 0]))
        foreground, background = HINTS_BY_KIND.get(entry.kind, ("", ""))
        rows.append({"image_id": entry.name, "source": source, "kind": entry.kind, "split": entry.split,
                     "width": labels.shape[1],
                     "height": labels.shape[0], "nuclei": count, "foreground": foreground, "background": background})
        by_source[source] = by_source.get(source, 0) + 1
        if entry.split == "train":
            by_kind[entry.kind] = by_kind.get(entry.kind, 0) + 1
        nuclei += count
        if progress:
            progress(i, len(planned))
    with (out / "index.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return BuildReport(len(rows), nuclei, by_source, by_kind, sum(r["split"] == "validation" for r in rows))
