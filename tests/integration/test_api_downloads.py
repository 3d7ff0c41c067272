"""Downloads through the API: a result's label image as ImageJ/Fiji, QuPath and OME files (each read back with
the library the tool uses), and an experiment's archive of labels, overlays and tables."""
from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import roifile
import tifffile

from testkit.api import nuclei_image
from testkit.api import sign_in


def _upload(admin, experiment, name, seed, **fields):
    response = admin.upload(experiment, [(name, nuclei_image(seed))], **fields)
    assert response.status_code == 202, response.json
    return response.json["images"][0]


def test_a_result_downloads_as_roiset_geojson_and_ome_tiff(harness, admin, experiment, tmp_path):
    row = _upload(admin, experiment, "well-a1.png", 70, pixel_size_um="0.5")
    early = admin.get(f"/api/v1/images/{row['id']}/RoiSet.zip")
    assert early.status_code == 409 and early.json["error"]["code"] == "not_ready"

    harness.finish(row["job_id"], count=3)
    stored = tifffile.imread(io.BytesIO(admin.get(f"/api/v1/images/{row['id']}/labels.tif").data))
    links = admin.get(f"/api/v1/images/{row['id']}/result").json["links"]

    roiset = admin.get(links["roiset"])
    assert roiset.status_code == 200 and roiset.mimetype == "application/zip"
    assert 'filename="well-a1_RoiSet.zip"' in roiset.headers["Content-Disposition"]
    (tmp_path / "RoiSet.zip").write_bytes(roiset.data)
    rois = roifile.roiread(tmp_path / "RoiSet.zip")
    assert sorted(int(roi.name) for roi in rois) == [1, 2, 3]
    for roi in rois:
        rows, cols = np.nonzero(stored == int(roi.name))
        xy = roi.coordinates()
        assert xy[:, 0].min() == cols.min() and xy[:, 0].max() == cols.max() + 1
        assert xy[:, 1].min() == rows.min() and xy[:, 1].max() == rows.max() + 1

    geojson = admin.get(links["geojson"])
    assert geojson.status_code == 200 and geojson.mimetype == "application/geo+json"
    features = json.loads(geojson.data)["features"]
    areas = {f["properties"]["measurements"]["label"]: f["properties"]["measurements"]["area"] for f in features}
    assert areas == {1: 4.0, 2: 6.0, 3: 8.0}  # from the result's nuclei table
    assert {f["properties"]["objectType"] for f in features} == {"detection"}

    ome = admin.get(links["ome_tiff"])
    assert ome.status_code == 200 and ome.mimetype == "image/tiff"
    with tifffile.TiffFile(io.BytesIO(ome.data)) as tif:
        np.testing.assert_array_equal(tif.asarray(), stored)
        pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
    assert float(pixels.attrib["PhysicalSizeX"]) == pytest.approx(0.5)
    assert float(pixels.attrib["PhysicalSizeY"]) == pytest.approx(0.5)


def _archive(response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.data[:200]
    assert response.mimetype == "application/zip" and response.is_streamed
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.testzip() is None
    return archive


def test_experiment_archive_holds_labels_overlays_and_tables(harness, admin, experiment):
    first = _upload(admin, experiment, "field.png", 71, condition="control")
    second = _upload(admin, experiment, "field.tif.png", 72, condition="drug")
    same_stem = _upload(admin, experiment, "field.PNG", 73, condition="drug")
    pending = _upload(admin, experiment, "pending.png", 74, condition="drug")
    for row, count in ((first, 2), (second, 3), (same_stem, 1)):
        harness.finish(row["job_id"], count=count)

    archive = _archive(admin.get(f"/api/v1/experiments/{experiment}/archive.zip"))
    names = archive.namelist()
    folder = names[0].split("/")[0]
    assert f"{folder}/results.csv" in names and f"{folder}/nuclei.csv" in names
    labels = sorted(n for n in names if n.startswith(f"{folder}/labels/"))
    assert len(labels) == 3 and len(set(labels)) == 3  # three finished images, two sharing a stem
    assert f"{folder}/labels/field_labels.tif" in labels and f"{folder}/labels/field.tif_labels.tif" in labels
    assert len([n for n in names if n.startswith(f"{folder}/overlays/")]) == 3
    assert len([n for n in names if n.startswith(f"{folder}/nuclei/")]) == 3
    assert not any("pending" in n for n in names if "/labels/" in n)
    assert np.unique(tifffile.imread(io.BytesIO(archive.read(f"{folder}/labels/field.tif_labels.tif")))).size == 4
    assert archive.read(f"{folder}/overlays/field_overlay.png").startswith(b"\x89PNG")
    results = list(csv.DictReader(io.StringIO(archive.read(f"{folder}/results.csv").decode())))
    assert {r["image_id"] for r in results} == {first["id"], second["id"], same_stem["id"], pending["id"]}
    nuclei = list(csv.DictReader(io.StringIO(archive.read(f"{folder}/nuclei.csv").decode())))
    assert len(nuclei) == 2 + 3 + 1

    filtered = _archive(admin.get(f"/api/v1/experiments/{experiment}/archive.zip?condition=control"))
    assert [n for n in filtered.namelist() if "/labels/" in n] == [f"{folder}/labels/field_labels.tif"]


def test_archive_lists_files_missing_from_the_store_and_refuses_unknown_experiments(harness, admin, experiment):
    row = _upload(admin, experiment, "lost.png", 75)
    harness.finish(row["job_id"], count=2)
    harness.store.delete(f"results/{row['job_id']}/overlay.png")
    archive = _archive(admin.get(f"/api/v1/experiments/{experiment}/archive.zip"))
    missing = [n for n in archive.namelist() if n.endswith("/MISSING.txt")]
    assert len(missing) == 1 and "overlays/lost_overlay.png" in archive.read(missing[0]).decode()
    assert any(n.endswith("/labels/lost_labels.tif") for n in archive.namelist())

    unknown = admin.get("/api/v1/experiments/no-such-experiment/archive.zip")
    assert unknown.status_code == 404 and unknown.json["error"]["code"]
    assert harness.client(role=None).get(f"/api/v1/experiments/{experiment}/archive.zip").status_code == 401


def test_the_experiment_page_links_the_archive(harness, admin, experiment):
    row = _upload(admin, experiment, "page.png", 76)
    harness.finish(row["job_id"], count=2)
    client, _csrf = sign_in(harness)
    page = client.get(f"/experiments/{experiment}").data.decode()
    assert f"/experiments/{experiment}/archive.zip" in page
    archive = _archive(client.get(f"/experiments/{experiment}/archive.zip"))
    assert any(n.endswith("/labels/page_labels.tif") for n in archive.namelist())
    roiset = client.get(f"/images/{row['id']}/RoiSet.zip")
    assert roiset.status_code == 200 and zipfile.ZipFile(io.BytesIO(roiset.data)).namelist()
