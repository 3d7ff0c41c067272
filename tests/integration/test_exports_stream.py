"""An experiment's exports: CSV text cells never start a spreadsheet formula, the nuclei tables carry each
result's extra per-nucleus measures, and a sizeable export streams in flat memory (SQLite for the cells
and columns, PostgreSQL for the columns and the memory)."""
from __future__ import annotations

import csv
import io

import pyarrow.parquet as pq
import pytest

from shared.infra import jobs
from shared.domain.spreadsheet import inert
from testkit import servers
from testkit.api import ApiHarness, nuclei_image

FORMULAS = {"filename": "=1+2.png", "condition": '=HYPERLINK("http://example.com","x")', "well": "@SUM(1+1)",
            "plate": "+cmd|' /C calc'!A0"}


def read_csv(response) -> list[dict]:
    assert response.status_code == 200 and response.mimetype == "text/csv", response.status_code
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def upload(client, experiment: str, files: list[tuple[str, bytes]], **fields) -> list[dict]:
    response = client.upload(experiment, files, **fields)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.json["images"]


def nucleus(label: int, measures: dict | None = None) -> dict:
    return dict(label=label, area=10.0 * label, perimeter=8.0, centroid_x=3.0, centroid_y=-4.5,
                equivalent_diameter=2.5, eccentricity=0.5, solidity=1.0, mean_intensity=100.0,
                integrated_intensity=400.0, measures=measures or {})


def finish(harness, job_id: str, measure_columns: list[str], nuclei: list[dict]) -> None:
    """A result as the worker records it (shared.infra.jobs.complete), with extra per-nucleus measures."""
    result = dict(image_id=harness.image_of(job_id), model_version="nucleus-test-00000000", count=len(nuclei),
                  area_mean=1.0, area_median=1.0, area_min=1.0, area_max=1.0, labels_key="l", overlay_key="o",
                  nuclei_csv_key="n", seconds_model=0.1, seconds_total=0.2, measure_columns=measure_columns)
    assert jobs.complete(job_id, result, nuclei, url=harness.url)


def test_inert_cells():
    assert [inert(v) for v in ("=1+2", "+1", "-x", "@A1", "a=b", "", 3, -2.5, None)] == [
        "'=1+2", "'+1", "'-x", "'@A1", "a=b", "", 3, -2.5, None]


def test_formula_cells_are_text_in_every_csv(harness, admin, experiment):
    [row] = upload(admin, experiment, [(FORMULAS["filename"], nuclei_image(1))], condition=FORMULAS["condition"],
                   well=FORMULAS["well"], plate=FORMULAS["plate"])
    harness.finish(row["job_id"], count=2)
    base = f"/api/v1/experiments/{experiment}"
    tables = {"results (api)": read_csv(admin.get(f"{base}/results?format=csv")),
              "nuclei (api)": read_csv(admin.get(f"{base}/nuclei.csv"))}
    for name, rows in tables.items():
        assert rows, name
        for cells in rows:
            for column, value in FORMULAS.items():
                assert cells[column] == "'" + value, (name, column, cells[column])
            assert not any(v.startswith(("=", "+", "-", "@")) for v in cells.values()), (name, cells)


def test_negative_numbers_are_not_escaped(harness, admin, experiment):
    [row] = upload(admin, experiment, [("plain.png", nuclei_image(2))])
    finish(harness, row["job_id"], [], [nucleus(1), nucleus(2)])
    rows = read_csv(admin.get(f"/api/v1/experiments/{experiment}/nuclei.csv"))
    assert [r["centroid_y"] for r in rows] == ["-4.5", "-4.5"]


def check_measures(harness, client, experiment: str) -> None:
    """Two results with different extra columns: the union in first-seen order, empty where missing."""
    [first], [second], [third] = (upload(client, experiment, [(f"m{i}.png", nuclei_image(40 + i))], condition=condition)
                                  for i, condition in enumerate(("a", "b", "a")))
    finish(harness, first["job_id"], ["mean_intensity_hoechst", "area_um2"],
           [nucleus(1, {"mean_intensity_hoechst": 812.5, "area_um2": 41.25}),
            nucleus(2, {"mean_intensity_hoechst": 90.0, "area_um2": 4.0})])
    finish(harness, second["job_id"], ["area_um2", "mean_intensity_gfp", "area"],
           [nucleus(1, {"area_um2": 7.5, "mean_intensity_gfp": 33.0, "area": 1.5})])
    finish(harness, third["job_id"], [], [nucleus(1)])
    measures = ["mean_intensity_hoechst", "area_um2", "mean_intensity_gfp", "measure_area"]

    rows = read_csv(client.get(f"/api/v1/experiments/{experiment}/nuclei.csv"))
    header = list(rows[0])
    assert header[-4:] == measures and header[:2] == ["image_id", "filename"]
    by_file = {(r["filename"], r["label"]): r for r in rows}
    assert [by_file["m0.png", "1"][m] for m in measures] == ["812.5", "41.25", "", ""]
    assert [by_file["m0.png", "2"][m] for m in measures] == ["90.0", "4.0", "", ""]
    assert [by_file["m1.png", "1"][m] for m in measures] == ["", "7.5", "33.0", "1.5"]
    assert by_file["m1.png", "1"]["area"] == "10.0"  # the fixed column keeps its own value
    assert [by_file["m2.png", "1"][m] for m in measures] == ["", "", "", ""]

    response = client.get(f"/api/v1/experiments/{experiment}/nuclei.parquet")
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.data))
    assert table.column_names == header
    assert all(str(table.schema.field(m).type) == "double" for m in measures)
    columns = table.to_pydict()
    got = {(f, label): [columns[m][i] for m in measures]
           for i, (f, label) in enumerate(zip(columns["filename"], columns["label"]))}
    assert got["m0.png", 1] == [812.5, 41.25, None, None] and got["m1.png", 1] == [None, 7.5, 33.0, 1.5]

    # a filter that leaves out the second result leaves out the columns only it has
    rows = read_csv(client.get(f"/api/v1/experiments/{experiment}/nuclei.csv?condition=a"))
    assert list(rows[0])[-2:] == ["mean_intensity_hoechst", "area_um2"] and len(rows) == 3


def test_extra_measure_columns_on_sqlite(harness, admin, experiment):
    check_measures(harness, admin, experiment)


@pytest.fixture
def postgres_harness(tmp_path, pg_url, use_settings):
    from shared.infra.db.session import get_engine

    yield ApiHarness(use_settings(tmp_path, database_url=pg_url))
    get_engine(pg_url).dispose()  # before the session's database is dropped


def test_extra_measure_columns_on_postgres(postgres_harness):
    client = postgres_harness.client("admin")
    assert client.post("/api/v1/experiments", json={"name": "pg-measures"}).status_code == 201
    check_measures(postgres_harness, client, "pg-measures")


@pytest.fixture(scope="module")
def sizeable():
    """A PostgreSQL database holding bench/scale.py's experiment: 200 images, 150,000 nuclei."""
    from bench import scale

    url = servers.create_database(servers.MACHINE_PG, prefix="nucleus_exports")
    scale.build(url, images=200, nuclei=150_000)
    yield url, scale.admin_token(url)
    from shared.infra.db.session import get_engine

    get_engine(url).dispose()
    servers.drop_database(url)


@pytest.mark.parametrize("table", ["nuclei.csv", "nuclei.parquet"])
def test_a_sizeable_export_streams_in_flat_memory(sizeable, table):
    """The API process (a child that streams the download) grows by far less than the download: rows are
    read, written and handed on in chunks, never all at once."""
    from bench import scale

    url, token = sizeable
    figures = scale.export(url, token, f"/api/v1/experiments/{scale.EXPERIMENT}/{table}")
    assert figures["rows"] == 150_000
    growth = figures["rss_peak_mb"] - figures["rss_before_mb"]  # after a warm-up export of an eighth of the rows
    # a whole-table build grows by hundreds of MB here (150,000 rows of 27 Python objects, or the CSV text)
    assert growth < 40, figures
    if table.endswith(".csv"):
        assert figures["bytes"] > 25 * 2 ** 20 and growth < figures["bytes"] / 2 ** 20 / 2, figures


def test_a_results_own_nuclei_table_has_no_formula_cells():
    """The worker's per-result nuclei.csv (shared.domain.outputs.nuclei_csv) leads with the image's metadata."""
    from shared.domain.outputs import nuclei_csv

    text = nuclei_csv([nucleus(1, {"area_um2": 4.0})], {"image_id": "abc", **FORMULAS}, ["area_um2"])
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert {column: row[column] for column in FORMULAS} == {c: "'" + v for c, v in FORMULAS.items()}
    assert row["image_id"] == "abc" and row["centroid_y"] == "-4.5" and row["area_um2"] == "4"
