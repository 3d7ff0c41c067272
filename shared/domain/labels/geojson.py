"""QuPath GeoJSON: a FeatureCollection (or a list of Features, or one Feature) of Polygon/MultiPolygon outlines
in the image's pixel coordinates, as QuPath's "Export objects as GeoJSON" writes them.

QuPath exports its detections (cells, with their `nucleusGeometry`) together with the annotations they were
found in; when the file holds detections, those are the nuclei, otherwise each annotation is one. Tiles and
TMA cores are never nuclei.

The text is parsed once: geometries become numpy arrays and measurements are dropped as soon as each object
is complete, so what stays in memory is the outlines, and the number of JSON values the parser may create is
bounded (from a count of separators) before it starts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from shared.domain.labels.errors import LabelsTooLarge, bad_labels
from shared.domain.labels.raster import Outlines

# JSON values (numbers, strings, arrays, objects) a GeoJSON may hold: this many, or one per four image pixels.
# A value held while parsing costs at most about 64 bytes (an empty list), so 16 bytes per pixel; a vertex (two
# values) costs about 150 bytes while its outline is filled, so about 19 bytes per pixel.
MIN_VALUES = 100_000
PIXELS_PER_VALUE = 4
AREA_TYPES = ("Polygon", "MultiPolygon")
DETECTION_TYPES = ("detection", "cell")
SKIPPED_TYPES = ("tile", "tma_core", "root")
_KEPT = ("type", "features", "objectType", "name")
_EMPTY: dict = {}
QUPATH_CLASS_TYPES = {"PathDetectionObject": "detection", "PathCellObject": "cell", "PathAnnotationObject": "annotation",
                      "PathTileObject": "tile", "TMACoreObject": "tma_core", "PathRootObject": "root"}


def looks_like_geojson(data: bytes) -> bool:
    start = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return start[:1] in (b"{", b"[")


@dataclass
class Geometry:
    kind: str
    rings: list | None  # for Polygon/MultiPolygon: every ring's (x, y) points as an array


@dataclass
class Feature:
    geometry: Geometry | None
    nucleus: Geometry | None
    object_type: str
    name: str


def from_geojson(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    limit = max(MIN_VALUES, height * width // PIXELS_PER_VALUE)
    values = data.count(b",") + data.count(b"[") + data.count(b"{") + 1
    if values > limit:
        raise LabelsTooLarge(f"the GeoJSON holds about {values} values; for a {width}x{height} image at most {limit}",
                             code="geojson_too_large")
    try:
        parsed = json.loads(data, object_pairs_hook=_reduce)
    except ValueError as exc:  # not JSON, not UTF-8, or a number too long to convert
        raise bad_labels(f"not readable GeoJSON: {exc}", code="bad_geojson") from None
    except RecursionError:
        raise bad_labels("not readable GeoJSON: nested too deeply", code="bad_geojson") from None
    features = _features(parsed)
    nuclei = [f for f in features if f.object_type in DETECTION_TYPES]
    if not nuclei:
        nuclei = [f for f in features if f.object_type not in SKIPPED_TYPES]
    if not nuclei:
        raise bad_labels("the GeoJSON holds no features that outline a nucleus (detections, cells or annotations)")
    outlines = Outlines(shape, "feature")
    for feature in nuclei:
        geometry = feature.nucleus or feature.geometry
        if geometry is None or geometry.kind not in AREA_TYPES:
            kind = geometry.kind if geometry else "feature without a geometry"
            raise bad_labels(f"feature {feature.name} is a {kind}; a nucleus is outlined by a Polygon or "
                             f"MultiPolygon", code="unsupported_geometry")
        outlines.add_polygon(geometry.rings, feature.name)
    return outlines.labels


def _reduce(pairs: list[tuple[str, object]]):
    """Each JSON object as the parser completes it: geometries to arrays, features to what a nucleus needs."""
    obj = dict(pairs)
    kind = obj.get("type")
    if kind in AREA_TYPES and "coordinates" in obj:
        return Geometry(kind, _rings(kind, obj["coordinates"]))
    if isinstance(kind, str) and ("coordinates" in obj or "geometries" in obj):
        return Geometry(kind, None)
    if kind == "Feature":
        properties = obj.get("properties") if isinstance(obj.get("properties"), dict) else {}
        object_type = properties.get("objectType") or QUPATH_CLASS_TYPES.get(str(obj.get("id")), "annotation")
        name = str(properties.get("name") or obj.get("id") or "")[:80]
        geometry = obj.get("geometry") if isinstance(obj.get("geometry"), Geometry) else None
        nucleus = obj.get("nucleusGeometry") if isinstance(obj.get("nucleusGeometry"), Geometry) else None
        return Feature(geometry, nucleus, str(object_type), name)
    kept = {key: obj[key] for key in _KEPT if key in obj}  # a collection, or a feature's properties
    return kept or _EMPTY


def _rings(kind: str, coordinates) -> list[np.ndarray]:
    polygons = coordinates if kind == "MultiPolygon" else [coordinates]
    if not isinstance(polygons, list) or not all(isinstance(p, list) for p in polygons):
        raise bad_labels(f"a {kind} has coordinates that are not lists of rings", code="bad_geojson")
    rings = []
    for polygon in polygons:
        for ring in polygon:
            try:
                points = np.asarray(ring, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                raise bad_labels(f"a {kind} has a ring that is not a list of [x, y] points",
                                 code="bad_geojson") from None
            if points.ndim != 2 or points.shape[1] < 2:
                raise bad_labels(f"a {kind} has a ring that is not a list of [x, y] points", code="bad_geojson")
            rings.append(points[:, :2])
    return rings


def _features(parsed) -> list[Feature]:
    if isinstance(parsed, Feature):
        items = [parsed]
    elif isinstance(parsed, list):
        items = parsed
    elif isinstance(parsed, dict) and parsed.get("type") == "FeatureCollection" and isinstance(parsed.get("features"), list):
        items = parsed["features"]
    elif isinstance(parsed, Geometry):
        raise bad_labels("the GeoJSON is a bare geometry: send a Feature or a FeatureCollection (as QuPath exports)",
                         code="bad_geojson")
    else:
        raise bad_labels("the GeoJSON is neither a FeatureCollection nor a list of Features", code="bad_geojson")
    features = []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, Feature):
            raise bad_labels(f"item {i} of the GeoJSON is not a Feature", code="bad_geojson")
        if not item.name:
            item.name = f"#{i}"
        features.append(item)
    return features
