"""End to end on the embedded default: real DSB2018 images uploaded over HTTP to `nucleus up`, segmented
by real Celery workers with the shipped model, come back with counts near their ground truth, with
their label image, overlay and nuclei table, through the API and the web pages."""
from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
import requests
import tifffile
from PIL import Image as PILImage


def near(count: int, truth: int) -> bool:
    return abs(count - truth) <= max(3, 0.3 * truth)


@pytest.fixture(scope="module")
def finished(stack_client, dsb_samples):
    """The samples uploaded (two conditions, one well each) and segmented: [(sample, upload row, result)]."""
    assert stack_client.create_experiment("e2e").status_code == 201
    rows = []
    for i, sample in enumerate(dsb_samples):
        response = stack_client.upload("e2e", [sample.path], condition="control" if i % 2 == 0 else "drug",
                                       well=f"A0{i + 1}", pixel_size_um="0.5")
        assert response.status_code == 202, response.text
        rows.append(response.json()["images"][0])
    done = []
    for sample, row in zip(dsb_samples, rows):
        job = stack_client.wait_job(row["job_id"], timeout=240)
        assert job["status"] == "done", job
        result = stack_client.get(f"/api/v1/images/{row['id']}/result")
        assert result.status_code == 200, result.text
        done.append((sample, row, result.json()))
    return done


def test_counts_are_near_the_truth(finished):
    report = [(s.image_id[:8], r["count"], s.count) for s, _row, r in finished]
    assert all(near(count, truth) for _id, count, truth in report), report
    assert all(r["model_version"].startswith("nucleus-") for _s, _row, r in finished)
    assert all(r["area"]["mean"] and r["area"]["min"] <= r["area"]["median"] <= r["area"]["max"]
               for _s, _row, r in finished)


def test_result_files_match_the_count(stack_client, finished):
    sample, _row, result = finished[0]
    labels = tifffile.imread(io.BytesIO(stack_client.get(result["links"]["labels"]).content))
    assert labels.dtype in (np.uint16, np.uint32) and labels.shape == (sample.height, sample.width)
    assert len(np.unique(labels[labels > 0])) == result["count"]
    overlay = PILImage.open(io.BytesIO(stack_client.get(result["links"]["overlay"]).content))
    assert overlay.size == (sample.width, sample.height)
    table = list(csv.DictReader(io.StringIO(stack_client.get(result["links"]["nuclei_csv"]).text)))
    assert len(table) == result["count"]


def test_experiment_results_and_exports(stack_client, finished):
    listing = stack_client.get("/api/v1/experiments/e2e/results").json()
    assert listing["total"] == len(finished)
    by_id = {r["image_id"]: r for r in listing["results"]}
    for _sample, row, result in finished:
        assert by_id[row["id"]]["count"] == result["count"]
        assert by_id[row["id"]]["model_version"] == result["model_version"]
        assert by_id[row["id"]]["status"] == "done"
    drug = stack_client.get("/api/v1/experiments/e2e/results?condition=drug").json()
    assert drug["total"] == len(finished) // 2
    nuclei = stack_client.get("/api/v1/experiments/e2e/nuclei.csv").text
    assert nuclei.count("\n") == 1 + sum(r["count"] for _s, _row, r in finished)
    summary = list(csv.DictReader(io.StringIO(stack_client.get("/api/v1/experiments/e2e/results?format=csv").text)))
    assert {r["image_id"] for r in summary} == set(by_id)


def test_the_same_image_again_is_a_duplicate_of_the_finished_one(stack_client, finished):
    sample, row, _result = finished[0]
    again = stack_client.upload("e2e", [sample.path]).json()["images"][0]
    assert (again["id"], again["job_id"], again["duplicate"], again["status"]) == (row["id"], row["job_id"], True, "done")


def test_the_web_pages_show_the_history(embedded_stack, finished):
    browser = requests.Session()
    login = browser.get(f"{embedded_stack.url}/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    signed_in = browser.post(f"{embedded_stack.url}/login", data={"token": embedded_stack.token, "csrf_token": csrf})
    assert signed_in.status_code == 200 and "e2e" in signed_in.text
    page = browser.get(f"{embedded_stack.url}/experiments/e2e").text
    for _sample, row, result in finished:
        assert f"/images/{row['id']}/overlay.png" in page
    assert 'data-pending="no"' in page
    plot = browser.get(f"{embedded_stack.url}/experiments/e2e/plots/counts.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    _sample, row, result = finished[0]
    image_page = browser.get(f"{embedded_stack.url}/images/{row['id']}").text
    assert f'id="count">{result["count"]}<' in image_page
