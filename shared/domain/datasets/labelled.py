"""Labelled image sets on disk, in either of the two layouts users hold them in.

- pairs:       DIR/images/<name>.<ext> with DIR/labels/<name>.<ext> (label image, 0 = background)
- competition: DIR/<id>/images/<id>.png with DIR/<id>/masks/*.png (one binary mask per nucleus)

An optional DIR/index.csv with `foreground`/`background` colour hints (as in the DSB2018 copy
under ../shared/data) names each image's type; without it the type is guessed from the pixels.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from shared.domain.imaging.imageio import read_image, read_labels

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
DSB_DIRNAME = "dsb2018-stage1-train"
VALIDATION_SPLIT = "dsb2018-validation.txt"

_TYPE_BY_HINT = {
    ("white", "black"): "fluorescence",
    ("purple", "purple"): "stained-tissue",
    ("purple", "white"): "stained",
    ("black", "white"): "brightfield",
}


@dataclass
class LabelledImage:
    name: str
    image: np.ndarray
    labels: np.ndarray
    kind: str


def default_data_root() -> Path:
    """../shared/data beside the checkout, or $NUCLEUS_DATA_ROOT."""
    if os.environ.get("NUCLEUS_DATA_ROOT"):
        return Path(os.environ["NUCLEUS_DATA_ROOT"])
    return Path(__file__).resolve().parents[4] / "shared" / "data"


def default_dsb_dir() -> Path:
    return default_data_root() / DSB_DIRNAME


def guess_kind(image: np.ndarray) -> str:
    rgb = image[..., :3].astype(np.float32) if image.ndim == 3 else np.repeat(image[..., None], 3, 2).astype(np.float32)
    grey = rgb.mean(axis=2)
    bright_background = np.median(grey) > (grey.min() + grey.max()) / 2
    coloured = float(np.abs(rgb - grey[..., None]).mean()) > 0.02 * max(float(grey.max()), 1.0)
    if not bright_background:
        return "fluorescence"
    return "stained" if coloured else "brightfield"


def kind_hints(root: Path) -> dict[str, str]:
    index = root / "index.csv"
    if not index.exists():
        return {}
    with index.open() as fh:
        return {row["image_id"]: _TYPE_BY_HINT.get((row.get("foreground"), row.get("background")), "other")
                for row in csv.DictReader(fh)}


def find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


def is_pairs_layout(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "labels").is_dir()


def list_names(root: Path) -> list[str]:
    root = Path(root)
    if is_pairs_layout(root):
        return sorted(p.stem for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(p.name for p in root.iterdir() if (p / "images").is_dir() and (p / "masks").is_dir())


def load(root: Path, name: str, hints: dict[str, str] | None = None) -> LabelledImage:
    root = Path(root)
    if is_pairs_layout(root):
        image_path = find_image(root / "images", name)
        label_path = find_image(root / "labels", name)
        if image_path is None or label_path is None:
            raise FileNotFoundError(f"{name}: image or label image missing under {root}")
        image, labels = read_image(image_path), read_labels(label_path)
    else:
        image_path = find_image(root / name / "images", name)
        if image_path is None:
            raise FileNotFoundError(f"{name}: no image under {root / name / 'images'}")
        image = read_image(image_path)
        labels = np.zeros(image.shape[:2], dtype=np.uint32)
        for i, mask_path in enumerate(sorted((root / name / "masks").glob("*.png")), start=1):
            labels[read_image(mask_path) > 0] = i
    if image.shape[:2] != labels.shape:
        raise ValueError(f"{name}: image {image.shape[:2]} and labels {labels.shape} differ in size")
    hints = kind_hints(root) if hints is None else hints
    return LabelledImage(name, image, labels, hints.get(name) or guess_kind(image))


def iter_labelled(root: Path, names: list[str] | None = None, hints: dict[str, str] | None = None):
    root = Path(root)
    hints = kind_hints(root) if hints is None else hints
    for name in names if names is not None else list_names(root):
        yield load(root, name, hints)


def validation_names() -> list[str]:
    """The fixed, committed validation split of the DSB2018 stage-1 training set. Never trained on."""
    text = resources.files("shared.splits").joinpath(VALIDATION_SPLIT).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def training_names(root: Path) -> list[str]:
    held_out = set(validation_names())
    return [n for n in list_names(root) if n not in held_out]
