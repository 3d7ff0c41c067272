"""What a segmentation is delivered as: a label TIFF, an overlay PNG, per-nucleus CSV rows, and the label image
as ImageJ/Fiji (RoiSet.zip), QuPath (GeoJSON) and OME (OME-TIFF with the pixel size) tools open it."""
from __future__ import annotations

import csv
import io

import numpy as np

from shared.domain.measurement import COLUMNS
from shared.domain.spreadsheet import inert

OUTLINE_RGB = (255, 220, 0)


def labels_tiff(labels: np.ndarray) -> bytes:
    """16-bit TIFF (32-bit above 65535 nuclei); 0 = background, one integer per nucleus."""
    import tifffile

    dtype = np.uint16 if labels.max() <= np.iinfo(np.uint16).max else np.uint32
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels.astype(dtype, copy=False), compression="zlib")
    return buffer.getvalue()


def overlay_rgb(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image, contrast-stretched to 8 bits, with each nucleus' outline drawn on it."""
    from skimage.segmentation import find_boundaries

    from shared.domain.model.preprocess import normalize

    rgb = (np.clip(normalize(image).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    rgb[find_boundaries(labels, mode="inner")] = OUTLINE_RGB
    return rgb


def overlay_png(image: np.ndarray, labels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(overlay_rgb(image, labels)).save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def nuclei_csv(rows: list[dict], extra: dict | None = None, measure_columns: list[str] | tuple = ()) -> str:
    """One line per nucleus; `extra` adds constant leading columns (image_id, filename, condition...),
    `measure_columns` trailing ones from each row's `measures` (per-channel intensities, µm shapes)."""
    extra = extra or {}
    leading = [inert(v) for v in extra.values()]  # file names, conditions, wells: never a live formula
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*extra.keys(), *COLUMNS, *measure_columns])
    for row in rows:
        measures = row.get("measures") or {}
        writer.writerow([*leading, *(_fmt(row[c]) for c in COLUMNS),
                         *(_fmt(measures.get(c)) for c in measure_columns)])
    return buffer.getvalue()


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


# --- label images as the tools labs use open them ------------------------------------------------------------------
# Outlines are in the image's pixel-edge coordinates, as ImageJ and QuPath use them: (0, 0) is the top-left
# corner of the top-left pixel, so a pixel (row r, column c) has its centre at x = c + 0.5, y = r + 0.5.

def nucleus_outlines(labels: np.ndarray) -> dict[int, np.ndarray]:
    """label -> closed outline as an (n, 2) array of x, y, following the nucleus' pixel edges.

    The outline is traced on the mask enlarged twice, which puts it on the pixel edges (corners cut by a quarter
    pixel), so a polygon fill by pixel centre gives back the nucleus' pixels and its area is the pixel count.
    A nucleus in several pieces is outlined by its largest piece; holes are filled.
    """
    from scipy.ndimage import find_objects
    from skimage.measure import approximate_polygon, find_contours

    outlines = {}
    for index, box in enumerate(find_objects(labels), start=1):
        if box is None:
            continue
        top, left = box[0].start, box[1].start
        mask = labels[box] == index
        big = np.pad(np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1), 1).astype(np.float32)
        contours = find_contours(big, 0.5)
        rows_cols = max(contours, key=lambda c: abs(_shoelace(c)))
        rows_cols = approximate_polygon(rows_cols, tolerance=0)
        # enlarged, padded coordinate k lies at edge coordinate (k - 1 + 0.5) / 2 of the crop
        xy = np.stack([left + (rows_cols[:, 1] - 0.5) / 2, top + (rows_cols[:, 0] - 0.5) / 2], axis=1)
        outlines[index] = xy
    return outlines


def _shoelace(points: np.ndarray) -> float:
    a, b = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(a, np.roll(b, -1)) - np.dot(b, np.roll(a, -1)))


def roiset_zip(labels: np.ndarray) -> bytes:
    """An ImageJ/Fiji RoiSet.zip: one polygon ROI per nucleus, named by its label (opens in the ROI Manager)."""
    import zipfile

    from roifile import ROI_TYPE, ImagejRoi

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for label, xy in nucleus_outlines(labels).items():
            roi = ImagejRoi.frompoints(xy[:-1].astype(np.float32), name=str(label))
            roi.roitype = ROI_TYPE.POLYGON
            archive.writestr(f"{label}.roi", roi.tobytes())
    return buffer.getvalue()


def qupath_geojson(labels: np.ndarray, measurements: dict[int, dict] | None = None) -> str:
    """A GeoJSON FeatureCollection QuPath imports as detections: one Polygon per nucleus, its numeric
    measurements (by label, e.g. from the nuclei table) under `properties.measurements`."""
    import json

    measurements = measurements or {}
    features = []
    for label, xy in nucleus_outlines(labels).items():
        values = {key: value for key, value in measurements.get(label, {}).items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)}
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [np.round(xy, 3).tolist()]},
            "properties": {"objectType": "detection", "name": str(label), "classification": {"name": "Nucleus"},
                           "measurements": {"label": label, **values}},
        })
    return json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))


def ome_tiff_labels(labels: np.ndarray, pixel_size_um: float | None = None) -> bytes:
    """The label image as an OME-TIFF, carrying the physical pixel size (µm) when it is known."""
    import tifffile

    dtype = np.uint16 if labels.max() <= np.iinfo(np.uint16).max else np.uint32
    metadata = {"axes": "YX", "Name": "nuclei labels"}
    if pixel_size_um:
        metadata.update(PhysicalSizeX=float(pixel_size_um), PhysicalSizeXUnit="µm",
                        PhysicalSizeY=float(pixel_size_um), PhysicalSizeYUnit="µm")
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels.astype(dtype, copy=False), ome=True, metadata=metadata, compression="zlib")
    return buffer.getvalue()


def measurements_by_label(nuclei_csv_text: str) -> dict[int, dict]:
    """A nuclei table (as nuclei_csv writes it) read back as label -> {column: number}."""
    table = {}
    for row in csv.DictReader(io.StringIO(nuclei_csv_text)):
        if not row.get("label"):
            continue
        table[int(row["label"])] = {key: _number(value) for key, value in row.items()
                                    if key != "label" and _number(value) is not None}
    return table


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# format name (`nucleus segment --format`, downloads) -> (file name after the image's stem, media type)
LABEL_FORMATS = {
    "tif": ("labels.tif", "image/tiff"),
    "roiset": ("RoiSet.zip", "application/zip"),
    "geojson": ("nuclei.geojson", "application/geo+json"),
    "ome-tiff": ("labels.ome.tif", "image/tiff"),
}


def label_file(fmt: str, labels: np.ndarray, pixel_size_um: float | None = None,
               nuclei_table: str | None = None) -> bytes:
    """The label image in one of LABEL_FORMATS; `nuclei_table` (nuclei_csv text) gives GeoJSON its measurements."""
    if fmt == "tif":
        return labels_tiff(labels)
    if fmt == "roiset":
        return roiset_zip(labels)
    if fmt == "geojson":
        return qupath_geojson(labels, measurements_by_label(nuclei_table) if nuclei_table else None).encode()
    if fmt == "ome-tiff":
        return ome_tiff_labels(labels, pixel_size_um)
    raise ValueError(f"no label format {fmt!r}; there are {', '.join(LABEL_FORMATS)}")
