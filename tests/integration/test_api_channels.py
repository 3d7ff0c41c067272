"""Uploading multi-channel microscope files (issue 28.1-2): the `channel` form field takes a name or an index,
the refusals are 4xx at upload naming the channels, and the image records every channel name, the chosen
channel, how Z and T were read and the pixel size."""
from __future__ import annotations

import io

import numpy as np
import tifffile

from shared.infra.db.tables import Image
from testkit.channels import ome_tiff, two_channel_planes


def image_row(harness, image_id: str) -> Image:
    with harness.session() as session:
        image = session.get(Image, image_id)
        session.expunge(image)
        return image


def test_upload_by_channel_name_records_the_channels_and_pixel_size(harness, admin, experiment):
    response = admin.upload(experiment, [("plate.ome.tif", ome_tiff(two_channel_planes()))], channel="edu")
    assert response.status_code == 202, response.json
    image = image_row(harness, response.json["images"][0]["id"])
    assert (image.channel, image.channel_names) == (1, ["Hoechst", "EdU"])
    assert image.pixel_size_um == 0.325
    assert image.extra == {"channel_name": "EdU"}
    detail = admin.get(f"/api/v1/images/{image.id}").json
    assert detail["channel"] == 1 and detail["pixel_size_um"] == 0.325


def test_z_t_and_the_given_pixel_size_are_recorded(harness, admin, experiment):
    buffer = io.BytesIO()
    stack = np.random.default_rng(3).integers(0, 4000, (2, 3, 32, 40), dtype=np.uint16)
    tifffile.imwrite(buffer, stack, imagej=True, metadata={"axes": "TZYX", "unit": "um"}, resolution=(2.0, 2.0))
    response = admin.upload(experiment, [("stack.tif", buffer.getvalue())], t="1", z="2", pixel_size_um="0.4",
                            condition="dmso")
    assert response.status_code == 202, response.json
    image = image_row(harness, response.json["images"][0]["id"])
    assert (image.channel, image.channel_names, image.pixel_size_um) == (0, ["ch0"], 0.4)
    assert image.extra == {"z": "2", "t": "1"}
    assert image.condition == "dmso"


def test_refusals_name_the_channels_and_store_nothing(harness, admin, experiment):
    images = harness.count(Image)
    data = ome_tiff(two_channel_planes())
    for fields, code, words in (({}, "channel_required", ["Hoechst", "EdU"]),
                                ({"channel": "DAPI"}, "bad_channel", ["'DAPI'", "Hoechst", "EdU"]),
                                ({"channel": "5"}, "bad_channel", ["Hoechst", "EdU"]),
                                ({"channel": "0", "z": "4"}, "bad_option", ["Z plane 4"]),
                                ({"channel": "0", "pixel_size_um": "0"}, "invalid_field", ["pixel_size_um"]),
                                ({"channel": "0", "pixel_size_um": "-0.1"}, "invalid_field", ["positive"])):
        response = admin.upload(experiment, [("plate.ome.tif", data)], **fields)
        assert response.status_code == 400, (fields, response.json)
        error = response.json["error"]
        assert error["code"] == code and all(word in error["message"] for word in words), (fields, error)
    assert harness.count(Image) == images
    assert admin.upload(experiment, [("plate.ome.tif", data)], channel="HOECHST").status_code == 202
