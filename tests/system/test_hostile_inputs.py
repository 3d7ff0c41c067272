"""Hostile label uploads through the JSON API (embedded default): zip bombs, nested and huge-ratio archives,
forged headers, bad CRCs, PNG/TIFF/JPEG label bombs, oversize and undersize labels, GeoJSON built to cost
memory or time. Each is refused with its 4xx within a second, and the process's peak resident memory grows
by little (read from /proc/self/status VmHWM after resetting it), where the same inputs once cost the API
gigabytes. The catalogue is shared with bench/hostile_inputs.py, which prints the figures."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from testkit.api import png_bytes
from testkit.hostile import (MiB, can_reset_peak, catalogue, jpeg_declaring, measured, png_of_zeros,
                                   tiff_of_zeros)

SHAPE = (256, 256)
SECONDS = 1.0  # for the image bombs; each label case says its own (a second, or two where parsing comes first)
# Far above what refusing costs (the request body is built in this process too), far below a decoded bomb.
PEAK_GROWTH = 64 * MiB


def post_labels(client, image_id: str, data: bytes, filename: str):
    return client.post(f"/api/v1/images/{image_id}/labels", data={"file": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


@pytest.fixture(scope="module")
def image_id(admin):
    assert admin.post("/api/v1/experiments", json={"name": "hostile-labels"}).status_code == 201
    pixels = np.random.default_rng(3).integers(0, 255, SHAPE, dtype=np.uint8)
    response = admin.upload("hostile-labels", [("field.png", png_bytes(pixels))])
    assert response.status_code == 202, response.json
    image_id = response.json["images"][0]["id"]
    # Warm up: the first label upload of each kind imports its decoders; that is not what is measured.
    labels = np.zeros(SHAPE, np.uint16)
    labels[10:20, 10:30] = 1
    assert post_labels(admin, image_id, png_bytes(labels), "warm.png").status_code == 201
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[40, 40], [60, 40], [50, 60]]]},
               "properties": {"objectType": "detection"}}
    assert post_labels(admin, image_id, json.dumps([feature]).encode(), "warm.geojson").status_code == 201
    return image_id


CASES = catalogue(SHAPE)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_label_upload_is_refused_quickly_in_little_memory(admin, image_id, case):
    data, filename = case.make()
    before = admin.get(f"/api/v1/images/{image_id}/labels").json["labels"]
    with measured() as cost:
        response = post_labels(admin, image_id, data, filename)
    assert response.status_code == case.status, (response.status_code, response.json)
    assert response.json["error"]["code"] == case.code, response.json
    assert response.json["error"]["message"].startswith("labels for field.png: "), response.json
    assert cost.seconds < case.seconds, f"{case.name}: refused after {cost.seconds:.2f} s"
    if can_reset_peak():
        assert cost.peak_growth_bytes < PEAK_GROWTH, f"{case.name}: peak grew by {cost.peak_growth_bytes / MiB:.0f} MiB"
    assert admin.get(f"/api/v1/images/{image_id}/labels").json["labels"] == before


def test_the_bombs_say_what_they_declare(admin, image_id):
    """The messages name the sizes, so a scientist who sent the wrong file can tell."""
    by_name = {case.name: case for case in CASES}
    messages = {}
    for name in ("zip bomb: 1.5 MB inflating to 1.5 GiB in one mask", "PNG label bomb: 15000x15000",
                 "TIFF label bomb: 15000x15000", "oversize label: one pixel wider", "bad CRC"):
        data, filename = by_name[name].make()
        messages[name] = post_labels(admin, image_id, data, filename).json["error"]["message"]
    assert "inflates to 1610612736 bytes" in messages["zip bomb: 1.5 MB inflating to 1.5 GiB in one mask"]
    assert "15000x15000 but the image is 256x256" in messages["PNG label bomb: 15000x15000"]
    assert "15000x15000 but the image is 256x256" in messages["TIFF label bomb: 15000x15000"]
    assert "257x256 but the image is 256x256" in messages["oversize label: one pixel wider"]
    assert "Bad CRC-32" in messages["bad CRC"]


def test_a_label_file_over_the_label_limit_is_refused_before_it_is_parsed(harness, image_id):
    from services.api import create_app

    small = create_app(harness.settings.model_copy(update={"max_label_bytes": MiB}))
    small.config["TESTING"] = True
    client = small.test_client()
    headers = {"Authorization": f"Bearer {harness.token('uploader')}"}
    body = b"[" + b"0," * MiB + b"0]"
    response = client.post(f"/api/v1/images/{image_id}/labels", headers=headers, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(body), "huge.geojson")})
    assert response.status_code == 413 and response.json["error"]["code"] == "file_too_large"
    assert str(MiB) in response.json["error"]["message"]


IMAGE_BOMBS = {
    "PNG of 20000x20000 zeros": lambda: (png_of_zeros(20000, 20000), "bomb.png"),
    "16-bit TIFF of 20000x20000 zeros": lambda: (tiff_of_zeros(20000, 20000), "bomb.tif"),
    "JPEG declaring 60000x60000": lambda: (jpeg_declaring(60000, 60000), "bomb.jpg"),
}


@pytest.mark.parametrize("name", list(IMAGE_BOMBS))
def test_an_image_bomb_over_the_pixel_limit_is_refused_from_its_header(admin, image_id, name):
    data, filename = IMAGE_BOMBS[name]()
    with measured() as cost:
        response = admin.upload("hostile-labels", [(filename, data)])
    assert response.status_code == 413 and response.json["error"]["code"] == "image_too_large", response.json
    assert cost.seconds < SECONDS
    if can_reset_peak():
        assert cost.peak_growth_bytes < PEAK_GROWTH
