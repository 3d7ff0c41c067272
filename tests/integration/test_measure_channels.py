"""Per-nucleus intensity in every channel and shapes in µm (issue 28.2): exact on a synthetic image, named as
the contract says, in CellProfiler's names on request, and stored by the worker."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from shared.domain.cellprofiler import rename_columns, rename_csv_header
from shared.domain.measurement import COLUMNS, measure_columns, measure_nuclei


def synthetic() -> tuple[np.ndarray, np.ndarray]:
    """Nucleus 1: a 10x10 square at rows 10-19, columns 20-29; nucleus 2: a 4x5 block at rows 40-43,
    columns 5-9. Channel 0 is flat per nucleus; channel 1 rises along each row of nucleus 1."""
    labels = np.zeros((64, 48), np.int32)
    labels[10:20, 20:30] = 1
    labels[40:44, 5:10] = 2
    channels = np.zeros((64, 48, 2), np.uint16)
    channels[..., 0][labels == 1] = 1000
    channels[..., 0][labels == 2] = 300
    channels[10:20, 20:30, 1] = np.arange(10, dtype=np.uint16)[np.newaxis, :] * 10  # 0..90 per row
    channels[40:44, 5:10, 1] = 7
    channels[0:5, 0:5] = 60000  # background, outside every nucleus
    return labels, channels


def test_every_channel_mean_integrated_and_max_exact():
    labels, channels = synthetic()
    rows = measure_nuclei(labels, channels[..., 0], channels, ["hoechst", "edu"], pixel_size_um=None)
    first, second = rows
    assert first["measures"] == {
        "mean_intensity_hoechst": 1000.0, "integrated_intensity_hoechst": 100_000.0, "max_intensity_hoechst": 1000.0,
        "mean_intensity_edu": 45.0, "integrated_intensity_edu": 4500.0, "max_intensity_edu": 90.0,
    }
    assert second["measures"]["mean_intensity_hoechst"] == 300.0
    assert second["measures"]["integrated_intensity_edu"] == 7 * 20
    assert first["mean_intensity"] == 1000.0 and first["integrated_intensity"] == 100_000.0  # the segmented image
    assert list(first["measures"]) == measure_columns(["hoechst", "edu"], None)


def test_shapes_in_microns_exact():
    labels, channels = synthetic()
    rows = measure_nuclei(labels, channels[..., 0], channels, ["hoechst", "edu"], pixel_size_um=0.5)
    for row in rows:
        m = row["measures"]
        assert m["area_um2"] == row["area"] * 0.25
        assert m["perimeter_um"] == row["perimeter"] * 0.5
        assert m["equivalent_diameter_um"] == row["equivalent_diameter"] * 0.5
        assert (m["centroid_x_um"], m["centroid_y_um"]) == (row["centroid_x"] * 0.5, row["centroid_y"] * 0.5)
    first = rows[0]["measures"]
    assert first["area_um2"] == 25.0
    assert (first["centroid_x_um"], first["centroid_y_um"]) == (24.5 * 0.5, 14.5 * 0.5)
    assert first["equivalent_diameter_um"] == pytest.approx(math.sqrt(4 * 100 / math.pi) * 0.5)
    assert measure_columns(["hoechst", "edu"], 0.5)[-5:] == ["area_um2", "perimeter_um", "equivalent_diameter_um",
                                                             "centroid_x_um", "centroid_y_um"]
    assert measure_columns(["hoechst"], None) == ["mean_intensity_hoechst", "integrated_intensity_hoechst",
                                                  "max_intensity_hoechst"]


def test_without_channels_or_pixel_size_the_rows_are_as_before():
    labels, channels = synthetic()
    rows = measure_nuclei(labels, channels[..., 0])
    assert set(rows[0]) == set(COLUMNS)


def test_cellprofiler_names():
    columns = ["image_id", "filename", "condition", "well", "label", "area", "perimeter", "centroid_x", "centroid_y",
               "mean_intensity", "mean_intensity_hoechst", "integrated_intensity_edu", "max_intensity_edu",
               "area_um2", "plate_barcode"]
    assert rename_columns(columns) == [
        "ImageNumber", "FileName_Image", "Metadata_Condition", "Metadata_Well", "ObjectNumber", "AreaShape_Area",
        "AreaShape_Perimeter", "Location_Center_X", "Location_Center_Y", "Intensity_MeanIntensity_Nuclear",
        "Intensity_MeanIntensity_hoechst", "Intensity_IntegratedIntensity_edu", "Intensity_MaxIntensity_edu",
        "AreaShape_Area_um2", "Metadata_PlateBarcode"]
    assert rename_columns(["image_number", "image_id", "label"]) == ["ImageNumber", "Metadata_ImageID",
                                                                      "ObjectNumber"]
    assert rename_columns(columns, "native") == columns
    with pytest.raises(ValueError):
        rename_columns(columns, "excel")
    table = "label,area,mean_intensity_dapi\n1,2.5,3\n"
    assert rename_csv_header(table) == "ObjectNumber,AreaShape_Area,Intensity_MeanIntensity_dapi\n1,2.5,3\n"


def test_the_worker_stores_every_channel_and_microns(use_settings, tmp_path):
    """A two-channel OME-TIFF uploaded with its nuclear channel: the result lists the extra columns, each nucleus
    holds them, and the result's nuclei.csv carries them."""
    from sqlalchemy import select, update

    from services.worker.pipeline import process
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.tables import Image, Nucleus, Result
    from shared.infra.db.session import session_scope
    from shared.infra.db.session import write_scope
    from shared.infra.storage import get_store
    from testkit.pipeline import seed_job
    from testkit.channels import ome_tiff, two_channel_planes

    use_settings(tmp_path)
    upgrade(f"sqlite:///{tmp_path / 'nucleus.db'}")
    image_id, job_id = seed_job(ome_tiff(two_channel_planes()), filename="plate.ome.tif", channel=0, enqueue=False)
    with write_scope() as session:
        session.execute(update(Image).where(Image.id == image_id).values(
            channel_names=["Hoechst", "EdU"], pixel_size_um=0.325, extra={"channel_name": "Hoechst", "z": "max"}))
    assert process(job_id, "test-worker").status == "done"
    with session_scope() as session:
        result = session.scalars(select(Result).where(Result.job_id == job_id)).one()
        nuclei = session.scalars(select(Nucleus).where(Nucleus.result_id == result.id)).all()
        columns, table_key = list(result.measure_columns), result.nuclei_csv_key
        measures = [dict(n.measures) for n in nuclei]
        areas = [n.area for n in nuclei]
    assert columns == measure_columns(["hoechst", "edu"], 0.325)
    assert len(measures) == 4
    for measured, area in zip(measures, areas):
        assert list(measured) == columns
        assert measured["area_um2"] == pytest.approx(area * 0.325 ** 2)
    assert sorted(round(m["max_intensity_edu"]) for m in measures) == [0, 500, 1000, 1500]
    table = list(csv.DictReader(io.StringIO(get_store().get(table_key).decode())))
    assert len(table) == 4 and set(columns) <= set(table[0])
