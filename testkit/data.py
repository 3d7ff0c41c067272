"""Real images with their true nucleus counts (index.csv): the small labelled DSB2018 subset committed under
tests/data/dsb2018 (its README says which images and why), so that a bare clone and CI test on the same nuclei.
The full sets (../shared/data, or $NUCLEUS_DATA_ROOT) are for bench/ and training only."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    image_id: str
    path: Path          # RGBA 8-bit PNG
    labels_path: Path   # 16-bit label image, 0 = background
    count: int          # true number of nuclei
    width: int
    height: int
    kind: str           # fluorescence | stained-tissue | stained | brightfield (from index.csv's colour hints)


# A data root laid out as ../shared/data: tests/data/dsb2018-stage1-train is a link to tests/data/dsb2018, so
# NUCLEUS_DATA_ROOT=DATA_ROOT (set by tests/conftest.py) points subprocesses and trainers at the subset too.
DATA_ROOT = Path(__file__).resolve().parents[1] / "tests" / "data"


def dsb_dir() -> Path:
    return DATA_ROOT / "dsb2018"


def load_index(root: Path | None = None) -> list[Sample]:
    from shared.domain.datasets.labelled import _TYPE_BY_HINT

    root = root or dsb_dir()
    index = root / "index.csv"
    if not index.exists():
        raise FileNotFoundError(f"{index} missing: the DSB2018 test subset is committed under tests/data/dsb2018")
    with index.open(newline="") as fh:
        return [Sample(image_id=row["image_id"], path=root / "images" / f"{row['image_id']}.png",
                       labels_path=root / "labels" / f"{row['image_id']}.png", count=int(row["nuclei"]),
                       width=int(row["width"]), height=int(row["height"]),
                       kind=_TYPE_BY_HINT.get((row["foreground"], row["background"]), "unknown"))
                for row in csv.DictReader(fh)]


def validation_ids() -> set[str]:
    """Ids the shipped model was never trained on."""
    from importlib import resources

    text = resources.files("shared.splits").joinpath("dsb2018-validation.txt").read_text()
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def pick(kind: str = "fluorescence", width: int | None = None, height: int | None = None, n: int = 1,
         held_out: bool = True) -> list[Sample]:
    """`n` samples of one kind and size, deterministic (sorted by id), from the validation split
    when `held_out` and it has enough of them."""
    candidates = [s for s in load_index() if s.kind == kind and (width is None or s.width == width)
                  and (height is None or s.height == height)]
    if held_out:
        held = validation_ids()
        unseen = [s for s in candidates if s.image_id in held]
        if len(unseen) >= n:
            candidates = unseen
    if len(candidates) < n:
        raise LookupError(f"only {len(candidates)} {kind} images of size {width}x{height} in the DSB data")
    return sorted(candidates, key=lambda s: s.image_id)[:n]
