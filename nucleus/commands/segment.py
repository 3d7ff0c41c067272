"""`nucleus segment IMAGE|DIR... --out DIR`: segment images locally, no server needed.

Every input and option is checked, and every output name settled, before the model loads: a mistake costs
no model start-up, and two inputs that would write the same outputs are named before any work.
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import click

from shared.domain.imaging.read_options import READ_HELP, ReadOptions, check_pixel_size, parse_channel, parse_scene, parse_z

SUMMARY_COLUMNS = ("image", "path", "width", "height", "count", "area_mean", "area_median", "area_min", "area_max",
                   "model_version", "error")
# What a folder is searched for (case-insensitive); a file named on the command line is read whatever its name.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".czi", ".nd2", ".lif")
IMAGE_FOLDER_SUFFIXES = (".zarr",)  # an OME-Zarr image is a folder
# --format names, as shared.domain.outputs.LABEL_FORMATS has them (not imported here: it needs numpy)
LABEL_FORMATS = {"tif": "labels.tif", "roiset": "RoiSet.zip", "geojson": "nuclei.geojson",
                 "ome-tiff": "labels.ome.tif"}


def _is_image_folder(path: Path) -> bool:
    return path.is_dir() and path.suffix.lower() in IMAGE_FOLDER_SUFFIXES


def find_images(inputs: tuple[Path, ...], recursive: bool, out: Path) -> list[Path]:
    """The images named, and those found in the folders named (sorted; hidden files and the output folder
    skipped, so a rerun does not segment its own outputs)."""
    out = out.resolve()

    def wanted(p: Path, folder: Path) -> bool:
        inner = p.relative_to(folder).parents
        return (not p.name.startswith(".")
                and ((p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or _is_image_folder(p))
                and not any(parent.suffix.lower() in IMAGE_FOLDER_SUFFIXES for parent in inner)
                and out not in p.resolve().parents)

    found = []
    for path in inputs:
        if path.is_file() or _is_image_folder(path):
            found.append(path)
            continue
        images = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if wanted(p, path))
        if not images:
            hint = "" if recursive else " (add --recursive to search its subfolders)"
            raise click.BadParameter(f"no images in folder {path}: looked for {', '.join(IMAGE_SUFFIXES)}{hint}",
                                     param_hint="IMAGES")
        found.extend(images)
    return found


def parse_formats(_ctx, _param, value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip().lower() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in LABEL_FORMATS]
    if unknown or not names:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'} is not a format; choose from "
                                 f"{', '.join(LABEL_FORMATS)} (comma-separated)")
    return names


def outputs_for(out: Path, stem: str, formats: tuple[str, ...], overlay: bool) -> dict[str, Path]:
    """Output kind -> path for one image: the chosen label formats, the nuclei table, the overlay if asked."""
    paths = {fmt: out / f"{stem}_{LABEL_FORMATS[fmt]}" for fmt in formats}
    paths["nuclei_csv"] = out / f"{stem}_nuclei.csv"
    if overlay:
        paths["overlay"] = out / f"{stem}_overlay.png"
    return paths


def check_collisions(images: list[Path]) -> None:
    by_stem = defaultdict(list)
    for path in images:
        by_stem[path.stem].append(path)
    clashes = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if clashes:
        named = "; ".join(f"{stem}: {', '.join(map(str, paths))}" for stem, paths in sorted(clashes.items()))
        raise click.UsageError(f"several inputs share a file stem, so their outputs would collide: {named}")


@click.command()
@click.argument("inputs", metavar="IMAGES", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=True, dir_okay=True, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <stem>_labels.tif, <stem>_nuclei.csv and summary.csv (created if needed).")
@click.option("--recursive", "-r", is_flag=True, help="Also search the subfolders of folders given as IMAGES.")
@click.option("--format", "formats", metavar="FMT[,FMT...]", default="tif", show_default=True, callback=parse_formats,
              help="Label outputs, comma-separated: tif (<stem>_labels.tif), roiset (ImageJ/Fiji <stem>_RoiSet.zip), "
                   "geojson (QuPath <stem>_nuclei.geojson), ome-tiff (<stem>_labels.ome.tif with the pixel size).")
@click.option("--overlay", is_flag=True, help="Also write <stem>_overlay.png: the image with each nucleus outlined.")
@click.option("--diameter", type=click.FloatRange(min=0, min_open=True), default=None, metavar="PX",
              help="Median nucleus diameter in pixels; skips measuring it with the size model.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Model weights (default: the shipped model).")
@click.option("--channel", metavar="NAME|N", default=None, callback=lambda _c, _p, v: _checked(parse_channel, v),
              help=READ_HELP["channel"])
@click.option("--z", "z", metavar="max|N", default="max", callback=lambda _c, _p, v: _checked(parse_z, v),
              help=READ_HELP["z"])
@click.option("--t", "t", metavar="N", type=click.IntRange(min=0), default=0, help=READ_HELP["t"])
@click.option("--scene", metavar="N|NAME", default="0", callback=lambda _c, _p, v: _checked(parse_scene, v),
              help=READ_HELP["scene"])
@click.option("--pixel-size", "pixel_size", metavar="UM", default=None,
              callback=lambda _c, _p, v: _checked(check_pixel_size, v), help=READ_HELP["pixel_size"])
@click.option("--columns", type=click.Choice(["native", "cellprofiler"]), default="native", show_default=True,
              help="Column names of the nuclei tables: native, or CellProfiler's (ImageNumber, ObjectNumber, "
                   "AreaShape_Area, Intensity_MeanIntensity_<channel>, ...).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: GPU if present).")
def segment(inputs: tuple[Path, ...], out: Path, recursive: bool, formats: tuple[str, ...], overlay: bool,
            diameter: float | None, weights: Path | None, channel: str | int | None, z: str | int, t: int,
            scene: str | int, pixel_size: float | None, columns: str, device: str | None):
    """Segment IMAGES (files, or folders of images), writing per image the label outputs and a nuclei table,
    and one summary table."""
    images = find_images(inputs, recursive, out)
    check_collisions(images)
    planned = {path: outputs_for(out, path.stem, formats, overlay) for path in images}
    out.mkdir(parents=True, exist_ok=True)
    existing = [p for paths in planned.values() for p in paths.values() if p.exists()]
    if existing:
        click.echo(f"warning: replacing {len(existing)} existing output file(s) in {out}", err=True)

    from tqdm import tqdm

    from shared.infra.settings import get_settings
    from shared.domain.imaging.errors import ImageError
    from shared.domain.measurement import area_summary, measure_columns, measure_nuclei
    from shared.domain.imaging.read_options import channel_columns
    from shared.domain.imaging.reading import probe, read_picture

    settings = get_settings()
    reading = ReadOptions(channel=channel, z=z, t=t, scene=scene, pixel_size_um=pixel_size)
    limits = {"max_pixels": settings.max_pixels, "max_bytes": settings.max_upload_bytes}
    refused = {}  # the reading options checked against every file's metadata before the model loads
    for path in images:
        try:
            probe(path, reading, **limits)
        except (ImageError, OSError) as exc:
            refused[path] = exc
            click.echo(f"error: {path}: {exc}", err=True)
    if len(refused) == len(images):
        _write_summary(out, [{"image": p.stem, "path": str(p), "error": str(e)} for p, e in refused.items()])
        click.echo(f"no image could be read as asked; nothing segmented (summary in {out})", err=True)
        raise SystemExit(1)

    from shared.domain.model.loading import load_segmenter

    segmenter = load_segmenter(weights, settings, device=device)
    rows, failures = [], 0
    for number, path in enumerate(tqdm(images, desc="segmenting", unit="image", file=sys.stderr,
                                       disable=len(images) < 2), start=1):
        row = {"image": path.stem, "path": str(path), "model_version": segmenter.version}
        if path in refused:
            failures += 1
            rows.append({**row, "error": str(refused[path])})
            continue
        try:
            picture = read_picture(path, reading, **limits)
            image = picture.nuclear
            labels = segmenter.segment(image, diameter=diameter)
        except (ImageError, OSError) as exc:
            failures += 1
            row["error"] = str(exc)
            click.echo(f"error: {path}: {exc}", err=True)
            rows.append(row)
            continue
        suffixes = channel_columns(picture.channel_names)
        nuclei = measure_nuclei(labels, image, picture.channels, suffixes, picture.pixel_size_um)
        leading = {"image_number": number, "image": path.stem} if columns == "cellprofiler" else {"image": path.stem}
        write_outputs(planned[path], image, labels, nuclei, leading, pixel_size_um=picture.pixel_size_um,
                      measured=measure_columns(suffixes, picture.pixel_size_um), columns=columns)
        areas = area_summary(nuclei)
        row.update(width=image.shape[1], height=image.shape[0], count=len(nuclei),
                   **{f"area_{k}": (round(v, 2) if v is not None else None) for k, v in areas.items()})
        rows.append(row)
    _write_summary(out, rows)
    done = len(rows) - failures
    click.echo(f"{done} image(s) segmented with {segmenter.version}; results in {out}", err=True)
    if failures:
        raise SystemExit(1)


def _write_summary(out: Path, rows: list[dict]) -> None:
    from shared.domain.spreadsheet import inert

    with (out / "summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: inert(value) for key, value in row.items()} for row in rows)


def write_outputs(paths: dict[str, Path], image, labels, nuclei: list[dict], leading: dict,
                  pixel_size_um: float | None, measured: list[str] = (), columns: str = "native") -> None:
    from shared.domain import outputs
    from shared.domain.cellprofiler import rename_csv_header

    table = outputs.nuclei_csv(nuclei, leading, measured)
    paths["nuclei_csv"].write_text(table if columns == "native" else rename_csv_header(table, columns))
    if "overlay" in paths:
        paths["overlay"].write_bytes(outputs.overlay_png(image, labels))
    for fmt in outputs.LABEL_FORMATS:
        if fmt in paths:
            paths[fmt].write_bytes(outputs.label_file(fmt, labels, pixel_size_um, table))


def _checked(parse, value):
    """A reading option checked with shared.domain.imaging.read_options, its refusal shown as click's usage error."""
    from shared.domain.imaging.errors import ImageError

    try:
        return parse(value)
    except ImageError as exc:
        raise click.BadParameter(exc.message) from None
