"""Each delivered format read back with the library the target tool uses: roifile (ImageJ/Fiji RoiSet.zip),
json (QuPath GeoJSON), tifffile (OME-TIFF with the pixel size), PIL (overlay PNG)."""
from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import roifile
import tifffile
from PIL import Image
from skimage.draw import disk, polygon

from shared.domain.measurement import measure_nuclei
from shared.domain.outputs import (measurements_by_label, nuclei_csv, nucleus_outlines, ome_tiff_labels, overlay_png,
                            qupath_geojson, roiset_zip)


@pytest.fixture
def labels() -> np.ndarray:
    """Nuclei of several shapes: a disc, a rectangle, a two-pixel sliver, an L, one touching the border."""
    labels = np.zeros((64, 96), np.uint16)
    labels[disk((20, 20), 9)] = 1
    labels[40:52, 50:78] = 2
    labels[5:7, 60] = 7
    labels[30:45, 5:9] = 12
    labels[41:45, 9:20] = 12
    labels[0:6, 88:96] = 300
    return labels


def _mask_of(outline_xy: np.ndarray, shape) -> np.ndarray:
    """Pixels whose centre lies inside the outline (how ImageJ and QuPath fill a polygon)."""
    mask = np.zeros(shape, bool)
    rows, cols = polygon(outline_xy[:, 1] - 0.5, outline_xy[:, 0] - 0.5, shape)
    mask[rows, cols] = True
    return mask


def _area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def test_outlines_follow_the_pixel_edges(labels):
    outlines = nucleus_outlines(labels)
    assert sorted(outlines) == [1, 2, 7, 12, 300]
    for label, xy in outlines.items():
        pixels = int((labels == label).sum())
        np.testing.assert_array_equal(_mask_of(xy, labels.shape), labels == label)
        assert abs(_area(xy) - pixels) <= 0.25 + 0.01 * pixels  # corners cut by a quarter pixel only


def test_roiset_reads_back_in_roifile_one_polygon_per_nucleus(labels, tmp_path):
    path = tmp_path / "RoiSet.zip"
    path.write_bytes(roiset_zip(labels))
    rois = roifile.roiread(path)
    assert sorted(int(roi.name) for roi in rois) == [1, 2, 7, 12, 300]
    for roi in rois:
        label = int(roi.name)
        assert roi.roitype == roifile.ROI_TYPE.POLYGON
        xy = roi.coordinates()
        np.testing.assert_array_equal(_mask_of(xy, labels.shape), labels == label)
        rows, cols = np.nonzero(labels == label)
        assert (roi.left, roi.top) == (cols.min(), rows.min())


def test_roiset_of_an_empty_label_image_is_an_empty_zip(tmp_path):
    import zipfile

    data = roiset_zip(np.zeros((8, 8), np.uint16))
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == []


def test_qupath_geojson_is_a_feature_collection_of_detections_with_measurements(labels):
    image = np.random.default_rng(0).integers(0, 1000, labels.shape).astype(np.uint16)
    table = nuclei_csv(measure_nuclei(labels, image), {"image": "a"})
    collection = json.loads(qupath_geojson(labels, measurements_by_label(table)))
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == 5
    for feature in features:
        assert feature["type"] == "Feature"
        assert feature["properties"]["objectType"] == "detection"
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon" and len(geometry["coordinates"]) == 1
        ring = np.array(geometry["coordinates"][0])
        assert ring.shape[1] == 2 and len(ring) >= 4 and (ring[0] == ring[-1]).all()  # a closed linear ring
        measurements = feature["properties"]["measurements"]
        label = measurements["label"]
        assert feature["properties"]["name"] == str(label)
        np.testing.assert_array_equal(_mask_of(ring, labels.shape), labels == label)
        assert measurements["area"] == (labels == label).sum()
        assert measurements["mean_intensity"] == pytest.approx(image[labels == label].mean(), rel=1e-5)
        assert "image" not in measurements  # text columns are not measurements


@pytest.mark.parametrize("pixel_size", [0.325, None])
def test_ome_tiff_carries_the_labels_and_the_physical_pixel_size(labels, pixel_size):
    with tifffile.TiffFile(io.BytesIO(ome_tiff_labels(labels, pixel_size))) as tif:
        assert tif.is_ome
        np.testing.assert_array_equal(tif.asarray(), labels)
        pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
    if pixel_size is None:
        assert "PhysicalSizeX" not in pixels.attrib
    else:
        assert float(pixels.attrib["PhysicalSizeX"]) == pytest.approx(0.325)
        assert float(pixels.attrib["PhysicalSizeY"]) == pytest.approx(0.325)
        assert pixels.attrib["PhysicalSizeXUnit"] == "µm"


def test_ome_tiff_keeps_more_than_65535_labels():
    labels = np.arange(70000, dtype=np.uint32).reshape(280, 250)
    with tifffile.TiffFile(io.BytesIO(ome_tiff_labels(labels, 1.0))) as tif:
        np.testing.assert_array_equal(tif.asarray(), labels)


def test_overlay_png_reads_back_in_pil_with_outlines_drawn(labels):
    image = np.full(labels.shape, 100, np.uint16)
    with Image.open(io.BytesIO(overlay_png(image, labels))) as png:
        assert png.format == "PNG" and png.size == (labels.shape[1], labels.shape[0])
        rgb = np.asarray(png.convert("RGB"))
    outlined = (rgb == (255, 220, 0)).all(axis=2)
    assert outlined[labels > 0].any() and not outlined[labels == 0].any()


def test_the_command_line_names_the_same_label_formats_as_the_library():
    from nucleus.commands import segment
    from shared.domain import outputs

    assert segment.LABEL_FORMATS == {fmt: name for fmt, (name, _media) in outputs.LABEL_FORMATS.items()}
