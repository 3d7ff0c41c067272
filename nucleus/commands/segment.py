"""`nucleus segment IMAGE... --out DIR`: segment images locally, no server needed."""
from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import click

SUMMARY_COLUMNS = ("image", "path", "width", "height", "count", "area_mean", "area_median", "area_min", "area_max",
                   "model_version", "error")


def output_paths(out: Path, stem: str) -> tuple[Path, Path]:
    return out / f"{stem}_labels.tif", out / f"{stem}_nuclei.csv"


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <stem>_labels.tif, <stem>_nuclei.csv and summary.csv (created if needed).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Model weights (default: the shipped model).")
@click.option("--channel", type=int, default=None, help="Channel to segment in multi-channel images (0-based).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: GPU if present).")
def segment(images: tuple[Path, ...], out: Path, weights: Path | None, channel: int | None, device: str | None):
    """Segment IMAGES, writing a label image and a nuclei table per image and one summary table."""
    clashes = sorted(stem for stem, n in Counter(p.stem for p in images).items() if n > 1)
    if clashes:
        raise click.UsageError(f"several inputs share a file stem, so their outputs would collide: {', '.join(clashes)}")
    out.mkdir(parents=True, exist_ok=True)
    existing = [p for img in images for p in output_paths(out, img.stem) if p.exists()]
    if existing:
        click.echo(f"warning: replacing {len(existing)} existing output file(s) in {out}", err=True)

    from tqdm import tqdm

    from shared.config import get_settings
    from shared.imageio import ImageError, read_image
    from shared.measure import area_summary, measure_nuclei
    from shared.model.segmenter import Segmenter
    from shared.outputs import labels_tiff, nuclei_csv

    segmenter = Segmenter.from_settings(weights, get_settings(), device=device)
    rows, failures = [], 0
    for path in tqdm(images, desc="segmenting", unit="image", file=sys.stderr, disable=len(images) < 2):
        row = {"image": path.stem, "path": str(path), "model_version": segmenter.version}
        try:
            image = read_image(path, channel=channel)
            labels = segmenter.segment(image)
        except (ImageError, OSError) as exc:
            failures += 1
            row["error"] = str(exc)
            click.echo(f"error: {path}: {exc}", err=True)
            rows.append(row)
            continue
        nuclei = measure_nuclei(labels, image)
        labels_path, csv_path = output_paths(out, path.stem)
        labels_path.write_bytes(labels_tiff(labels))
        csv_path.write_text(nuclei_csv(nuclei, {"image": path.stem}))
        areas = area_summary(nuclei)
        row.update(width=image.shape[1], height=image.shape[0], count=len(nuclei),
                   **{f"area_{k}": (round(v, 2) if v is not None else None) for k, v in areas.items()})
        rows.append(row)
    with (out / "summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    done = len(rows) - failures
    click.echo(f"{done} image(s) segmented with {segmenter.version}; results in {out}", err=True)
    if failures:
        raise SystemExit(1)
