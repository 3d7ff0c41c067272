"""Label uploads in the formats labs already use, through the JSON API on the embedded default: an ImageJ/Fiji
RoiSet.zip and a single .roi written with roifile, and QuPath GeoJSON. The stored label image is checked pixel
by pixel against the outlines: a pixel belongs to an outline when its centre lies inside it, in coordinates
whose (0, 0) is the top-left corner of the image (ImageJ's and QuPath's convention)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from roifile import ROI_OPTIONS, ROI_TYPE, ImagejRoi, roiwrite
from skimage.draw import ellipse as draw_ellipse
from skimage.draw import polygon as draw_polygon

from shared.infra.db.tables import Label
from shared.domain.imaging.imageio import decode
from shared.domain.labels.raster import Outlines
from testkit.api import png_bytes

HEIGHT, WIDTH = 48, 64  # not square, so that x and y cannot be swapped unseen


def post_labels(client, image_id: str, data: bytes, filename: str):
    return client.post(f"/api/v1/images/{image_id}/labels", data={"file": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


@pytest.fixture
def image_id(admin, experiment):
    rng = np.random.default_rng(len(experiment))
    pixels = rng.integers(0, 255, (HEIGHT, WIDTH), dtype=np.uint8)
    response = admin.upload(experiment, [("field.png", png_bytes(pixels))])
    assert response.status_code == 202, response.json
    return response.json["images"][0]["id"]


def polygon_mask(*rings) -> np.ndarray:
    """Pixels whose centres lie inside an odd number of rings (skimage's centres are at integer coordinates)."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    for ring in rings:
        ring = np.asarray(ring, float)
        rows, cols = draw_polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape=(HEIGHT, WIDTH))
        inside = np.zeros_like(mask)
        inside[rows, cols] = True
        mask ^= inside
    return mask


def ellipse_mask(left, top, width, height) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    rows, cols = draw_ellipse(top + height / 2 - 0.5, left + width / 2 - 0.5, height / 2, width / 2,
                              shape=(HEIGHT, WIDTH))
    mask[rows, cols] = True
    return mask


def assert_nuclei(stored: np.ndarray, expected: list[np.ndarray]) -> None:
    """The stored labels hold exactly these nuclei, one id each, and background elsewhere."""
    assert stored.shape == (HEIGHT, WIDTH)
    assert sorted(np.unique(stored)) == list(range(len(expected) + 1))
    for i, mask in enumerate(expected):
        assert mask.any(), f"nucleus {i} of the test covers no pixel"
        ids = np.unique(stored[mask])
        assert len(ids) == 1 and ids[0] != 0, (i, ids)
        assert np.array_equal(stored == ids[0], mask), f"nucleus {i} differs in {(stored == ids[0]) ^ mask} pixels"


def stored_labels(harness, admin, response) -> np.ndarray:
    assert response.status_code == 201, response.json
    with harness.session() as session:
        row = session.get(Label, response.json["id"])
    download = admin.get(f"/api/v1/labels/{row.id}/labels.png")
    assert download.status_code == 200 and download.data == harness.store.get(row.object_key)
    return decode(download.data)


# --- ImageJ / Fiji ---------------------------------------------------------------------------------

L_SHAPE = [[4, 4], [16, 4], [16, 9], [9, 9], [9, 20], [4, 20]]  # integer vertices, as ImageJ's polygon tool makes
FREEHAND = [[22.3, 3.2], [34.6, 5.1], [37.2, 14.7], [28.4, 19.3], [21.1, 12.6]]  # sub-pixel
RECT = (5, 28, 9, 6)  # left, top, width, height
OVAL = (30, 26, 11, 7)
SUBPIXEL_RECT = (45.25, 30.4, 7.5, 9.3)


def imagej_rois() -> tuple[list[ImagejRoi], list[np.ndarray]]:
    polygon = ImagejRoi.frompoints(np.array(L_SHAPE, np.int32), name="L")
    polygon.roitype = ROI_TYPE.POLYGON
    freehand = ImagejRoi.frompoints(np.array(FREEHAND), name="freehand")
    rect = ImagejRoi(roitype=ROI_TYPE.RECT, name="rect", left=RECT[0], top=RECT[1], right=RECT[0] + RECT[2],
                     bottom=RECT[1] + RECT[3])
    oval = ImagejRoi(roitype=ROI_TYPE.OVAL, name="oval", left=OVAL[0], top=OVAL[1], right=OVAL[0] + OVAL[2],
                     bottom=OVAL[1] + OVAL[3])
    left, top, width, height = SUBPIXEL_RECT
    fine = ImagejRoi(roitype=ROI_TYPE.RECT, name="fine", options=ROI_OPTIONS.SUB_PIXEL_RESOLUTION,
                     left=int(left), top=int(top), right=int(left + width) + 1, bottom=int(top + height) + 1,
                     xd=left, yd=top, widthd=width, heightd=height)
    expected = [polygon_mask(L_SHAPE), polygon_mask(FREEHAND),
                polygon_mask([[RECT[0], RECT[1]], [RECT[0] + RECT[2], RECT[1]],
                              [RECT[0] + RECT[2], RECT[1] + RECT[3]], [RECT[0], RECT[1] + RECT[3]]]),
                ellipse_mask(*OVAL),
                polygon_mask([[left, top], [left + width, top], [left + width, top + height], [left, top + height]])]
    return [polygon, freehand, rect, oval, fine], expected


def test_a_fiji_roiset_becomes_one_nucleus_per_roi(harness, admin, image_id, tmp_path):
    rois, expected = imagej_rois()
    roiwrite(tmp_path / "RoiSet.zip", rois)
    # the rectangle's pixels are exact: columns 5..13, rows 28..33
    assert expected[2].sum() == 9 * 6 and expected[2][28:34, 5:14].all()
    response = post_labels(admin, image_id, (tmp_path / "RoiSet.zip").read_bytes(), "RoiSet.zip")
    assert response.json["count"] == 5
    assert_nuclei(stored_labels(harness, admin, response), expected)


def test_a_single_roi_file_is_one_nucleus(harness, admin, image_id, tmp_path):
    rois, expected = imagej_rois()
    rois[1].tofile(tmp_path / "one.roi")
    response = post_labels(admin, image_id, (tmp_path / "one.roi").read_bytes(), "one.roi")
    assert response.json["count"] == 1
    assert_nuclei(stored_labels(harness, admin, response), [expected[1]])


def test_a_later_roi_lies_over_an_earlier_one(harness, admin, image_id, tmp_path):
    big = [[10.2, 10.3], [40.6, 10.3], [40.6, 40.1], [10.2, 40.1]]
    small = [[20.4, 20.2], [30.3, 20.2], [30.3, 30.4], [20.4, 30.4]]
    roiwrite(tmp_path / "RoiSet.zip", [ImagejRoi.frompoints(np.array(big), name="big"),
                                       ImagejRoi.frompoints(np.array(small), name="small")])
    response = post_labels(admin, image_id, (tmp_path / "RoiSet.zip").read_bytes(), "RoiSet.zip")
    assert_nuclei(stored_labels(harness, admin, response),
                  [polygon_mask(big) & ~polygon_mask(small), polygon_mask(small)])


def test_a_composite_roi_with_a_hole_is_one_nucleus_without_its_hole(harness, admin, image_id):
    outer = [[10.3, 10.3], [40.3, 10.3], [40.3, 40.3], [10.3, 40.3]]
    hole = [[20.3, 20.3], [30.3, 20.3], [30.3, 30.3], [20.3, 30.3]]
    path = []
    for ring in (outer, hole):  # ImageJ's shape ROI: MOVETO x y, LINETO x y..., CLOSE
        path += [0, *ring[0]] + [value for point in ring[1:] for value in (1, *point)] + [4]
    donut = ImagejRoi(roitype=ROI_TYPE.RECT, name="donut", left=10, top=10, right=41, bottom=41,
                      multi_coordinates=np.array(path, np.float32), shape_roi_size=len(path))
    response = post_labels(admin, image_id, donut.tobytes(), "donut.roi")
    assert response.json["count"] == 1
    expected = polygon_mask(outer, hole)
    assert expected.sum() == 30 * 30 - 10 * 10
    assert_nuclei(stored_labels(harness, admin, response), [expected])


# --- QuPath ----------------------------------------------------------------------------------------

CELL = [[6.5, 5.5], [18.2, 4.7], [21.6, 13.3], [12.1, 17.8], [5.3, 12.4]]
CELL_BOUNDARY = [[3.5, 2.5], [24.2, 2.7], [25.6, 19.3], [2.1, 20.8]]
RING = [[30.3, 4.4], [50.7, 4.4], [50.7, 22.6], [30.3, 22.6]]
HOLE = [[36.6, 9.2], [44.4, 9.2], [44.4, 17.7], [36.6, 17.7]]
PART_A = [[4.6, 30.3], [12.4, 30.3], [12.4, 40.7], [4.6, 40.7]]
PART_B = [[16.2, 33.3], [24.8, 38.9], [16.2, 44.6]]


def closed(ring):
    return [*ring, ring[0]]


def qupath_feature(object_type: str, geometry: dict, name: str | None = None, **extra) -> dict:
    properties = {"objectType": object_type, "measurements": {"Area µm^2": 41.2, "Circularity": 0.81}}
    if name:
        properties["name"] = name
    return {"type": "Feature", "id": "8a7e1d0c-0d4f-4a4e-9c55-1f2e3d4c5b6a", "geometry": geometry,
            "properties": properties, **extra}


def polygon(*rings) -> dict:
    return {"type": "Polygon", "coordinates": [closed(ring) for ring in rings]}


def test_qupath_detections_become_nuclei_and_their_annotation_does_not(harness, admin, image_id):
    region = polygon([[0, 0], [WIDTH, 0], [WIDTH, HEIGHT], [0, HEIGHT]])
    features = [
        qupath_feature("annotation", region, "Region*"),
        # a cell: its nucleus is the nucleus, not the cell boundary
        qupath_feature("cell", polygon(CELL_BOUNDARY), nucleusGeometry=polygon(CELL)),
        qupath_feature("detection", polygon(RING, HOLE)),
        qupath_feature("detection", {"type": "MultiPolygon",
                                     "coordinates": [[closed(PART_A)], [closed(PART_B)]]}),
    ]
    data = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    response = post_labels(admin, image_id, data, "detections.geojson")
    assert response.json["count"] == 3
    assert_nuclei(stored_labels(harness, admin, response),
                  [polygon_mask(CELL), polygon_mask(RING, HOLE), polygon_mask(PART_A, PART_B)])


def test_a_list_of_qupath_annotations_is_one_nucleus_each(harness, admin, image_id):
    features = [qupath_feature("annotation", polygon(CELL)), qupath_feature("annotation", polygon(PART_B))]
    response = post_labels(admin, image_id, json.dumps(features, indent=2).encode(), "annotations.json")
    assert response.json["count"] == 2
    assert_nuclei(stored_labels(harness, admin, response), [polygon_mask(CELL), polygon_mask(PART_B)])


def test_a_qupath_0_2_export_names_object_types_by_class(harness, admin, image_id):
    """QuPath 0.2 wrote no objectType; the feature's id names the Java class."""
    features = [{"type": "Feature", "id": "PathAnnotationObject", "geometry": polygon([[0, 0], [WIDTH, 0],
                                                                                    [WIDTH, HEIGHT], [0, HEIGHT]]),
                 "properties": {"isLocked": False}},
                {"type": "Feature", "id": "PathDetectionObject", "geometry": polygon(CELL),
                 "properties": {"measurements": [{"name": "Area", "value": 41.0}]}}]
    response = post_labels(admin, image_id, json.dumps(features).encode(), "qupath-0.2.json")
    assert response.json["count"] == 1
    assert_nuclei(stored_labels(harness, admin, response), [polygon_mask(CELL)])


def test_the_same_nuclei_from_a_roiset_and_a_geojson_are_one_label(harness, admin, image_id, tmp_path):
    roiwrite(tmp_path / "RoiSet.zip", [ImagejRoi.frompoints(np.array(CELL), name="a"),
                                       ImagejRoi.frompoints(np.array(PART_B), name="b")])
    from_fiji = post_labels(admin, image_id, (tmp_path / "RoiSet.zip").read_bytes(), "RoiSet.zip")
    features = [qupath_feature("detection", polygon(CELL)), qupath_feature("detection", polygon(PART_B))]
    from_qupath = post_labels(admin, image_id, json.dumps(features).encode(), "cells.geojson")
    assert from_fiji.status_code == 201
    assert from_qupath.status_code == 200 and from_qupath.json["id"] == from_fiji.json["id"]


# --- bad labels ------------------------------------------------------------------------------------

def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def roi_bytes(roi: ImagejRoi) -> bytes:
    return roi.tobytes()


def bad_cases() -> dict[str, tuple[bytes, str, int, str, str]]:
    """case → (bytes, filename, status, error code, words the message must hold)."""
    line = ImagejRoi(roitype=ROI_TYPE.LINE, name="a line", x1=2, y1=2, x2=20, y2=20)
    points = ImagejRoi.frompoints(np.array([[3, 4], [5, 6]]), name="dots")
    points.roitype = ROI_TYPE.POINT
    far = ImagejRoi.frompoints(np.array([[1000.5, 2000.5], [1010.5, 2000.5], [1010.5, 2010.5]]), name="far")
    wrong_place = [qupath_feature("detection", polygon([[x + 5000, y + 7000] for x, y in CELL]), "shifted")]
    empty_labels = np.zeros((HEIGHT, WIDTH), np.uint16)
    small = np.zeros((HEIGHT // 2, WIDTH // 2), np.uint16)
    small[2:6, 2:6] = 1
    return {
        "RoiSet with no ROIs": (zip_of({}), "RoiSet.zip", 400, "bad_labels", "no mask images and no ImageJ ROIs"),
        "RoiSet of folders only": (zip_of({"RoiSet/": b""}), "RoiSet.zip", 400, "bad_labels", "no mask"),
        "RoiSet of lines": (zip_of({"0001-0002.roi": roi_bytes(line)}), "RoiSet.zip", 400, "unsupported_roi", "line"),
        "RoiSet of points": (zip_of({"0001-0003.roi": roi_bytes(points)}), "RoiSet.zip", 400, "unsupported_roi",
                             "point"),
        "ROI outside the image": (zip_of({"far.roi": roi_bytes(far)}), "RoiSet.zip", 400, "outside_image",
                                  "outside the 64x48 image"),
        "not a ROI inside the RoiSet": (zip_of({"0001.roi": b"Iout" + b"\x00" * 10}), "RoiSet.zip", 400, "bad_labels",
                                        "not a readable ImageJ ROI"),
        "RoiSet mixed with masks": (zip_of({"a.roi": roi_bytes(far), "b.png": png_bytes(small)}), "RoiSet.zip", 400,
                                    "bad_labels", "mixes"),
        "GeoJSON in other coordinates": (json.dumps(wrong_place).encode(), "cells.geojson", 400, "outside_image",
                                         "coordinates must be in the image's own pixels"),
        "GeoJSON without features": (b'{"type": "FeatureCollection", "features": []}', "x.geojson", 400, "bad_labels",
                                     "no features"),
        "GeoJSON of points": (json.dumps([qupath_feature("detection", {"type": "Point", "coordinates": [3, 4]})])
                              .encode(), "x.geojson", 400, "unsupported_geometry", "Point"),
        "GeoJSON bare geometry": (json.dumps(polygon(CELL)).encode(), "x.geojson", 400, "bad_geojson",
                                  "bare geometry"),
        "GeoJSON cut short": (json.dumps([qupath_feature("detection", polygon(CELL))]).encode()[:-20], "x.geojson",
                              400, "bad_geojson", "not readable GeoJSON"),
        "GeoJSON with text coordinates": (b'[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                                          b'[[["a", "b"], ["c", "d"], ["e", "f"]]]}, "properties": {}}]',
                                          "x.geojson", 400, "bad_geojson", "[x, y] points"),
        "GeoJSON with a degenerate ring": (json.dumps([qupath_feature("detection", polygon([[1, 1], [5, 5]]))])
                                           .encode(), "x.geojson", 400, "bad_labels", "fewer than 3 points"),
        "empty label": (png_bytes(empty_labels), "labels.png", 400, "bad_labels", "no nucleus"),
        "label of the wrong size": (png_bytes(small), "labels.png", 400, "bad_labels",
                                    "32x24 but the image is 64x48"),
        "mask of the wrong size": (zip_of({"m1.png": png_bytes((small * 255).astype(np.uint8))}), "masks.zip", 400,
                                   "bad_labels", "32x24 but the image is 64x48"),
    }


@pytest.mark.parametrize("case", list(bad_cases()))
def test_bad_labels_in_lab_formats_get_a_clear_4xx_and_store_nothing(harness, admin, image_id, case):
    data, filename, status, code, words = bad_cases()[case]
    response = post_labels(admin, image_id, data, filename)
    assert response.status_code == status, (case, response.status_code, response.json)
    error = response.json["error"]
    assert error["code"] == code, (case, error)
    assert words in error["message"], (case, error["message"])
    assert admin.get(f"/api/v1/images/{image_id}/labels").json["labels"] == []


# --- the fill itself -------------------------------------------------------------------------------

def test_the_scanline_fill_matches_skimage_on_random_polygons():
    rng = np.random.default_rng(7)
    for _ in range(200):
        ring = rng.uniform(-8, 70, (int(rng.integers(3, 14)), 2))
        outlines = Outlines((HEIGHT, WIDTH), "test")
        try:
            outlines.add_polygon([ring], "random")
            filled = outlines.labels > 0
        except Exception as exc:  # wholly outside the image: refused, and skimage agrees there is nothing
            assert getattr(exc, "code", None) == "outside_image"
            assert not polygon_mask(ring).any()
            continue
        assert np.array_equal(filled, polygon_mask(ring))


def test_many_outlines_filled_together_keep_their_order():
    """Outlines are filled in batches; a later one still lies over an earlier one, across batches too."""
    rng = np.random.default_rng(11)
    outlines = Outlines((HEIGHT, WIDTH), "test", batch=50)  # a few outlines' points, crossings or pixels at once
    expected = np.zeros((HEIGHT, WIDTH), np.uint32)
    given = 0  # outlines take ids in the order they are given
    for i in range(1, 3001):
        x, y = rng.uniform(0, WIDTH - 1), rng.uniform(0, HEIGHT - 1)
        ring = np.array([[x, y], [x + rng.uniform(2, 9), y + 0.3], [x + 1.7, y + rng.uniform(2, 9)]])
        outlines.add_polygon([ring], str(i))
        given += 1
        expected[polygon_mask(ring)] = given
        if i % 1000 == 0:  # an ellipse between batches of polygons
            outlines.add_ellipse(x, y, 7.3, 5.1, f"oval {i}")
            given += 1
            expected[ellipse_mask(x, y, 7.3, 5.1)] = given
    assert np.array_equal(outlines.labels, expected)


def test_outlines_that_cover_the_image_many_times_over_are_refused():
    outlines = Outlines((HEIGHT, WIDTH), "feature")
    whole = np.array([[0, 0], [WIDTH, 0], [WIDTH, HEIGHT], [0, HEIGHT]], float)
    with pytest.raises(Exception) as refused:
        for i in range(1000):
            outlines.add_polygon([whole], f"#{i}")
        outlines.labels
    assert refused.value.code == "labels_too_complex" and "times over" in refused.value.message
