"""Big images in bounded memory: segmented in regions whose seams do not split or double nuclei, measured per
region exactly as on the whole label image, and refused at upload when a worker could not hold them."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.domain.segmentation import tiled
from shared.domain.measurement import measure_nuclei

REGION, MARGIN = 200, 96  # seams at 200 and 400 cross the 256-pixel images of the mosaic, not their borders


@pytest.fixture(scope="module")
def segmenter():
    from shared.domain.model.segmenter import Segmenter

    return Segmenter(precision="fp32", runtime="torch")


@pytest.fixture(scope="module")
def mosaic(dsb_samples) -> np.ndarray:
    """2x2 real 256x256 fluorescence images: 512x512."""
    pieces = [np.asarray(Image.open(s.path))[..., :3] for s in dsb_samples[:4]]
    return np.concatenate([np.concatenate(pieces[:2], axis=1), np.concatenate(pieces[2:], axis=1)], axis=0)


@pytest.fixture(scope="module")
def whole(segmenter, mosaic) -> np.ndarray:
    return segmenter.segment(mosaic)


@pytest.fixture(scope="module")
def in_regions(segmenter, mosaic):
    def measure(found, box):
        return measure_nuclei(found, mosaic[box], mosaic[box], ["r", "g", "b"], 0.5)

    return tiled.segment_in_regions(segmenter, mosaic, measure, pixel_size_um=0.5, region=REGION, margin=MARGIN)


def best_matches(found: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each nucleus of `found`, the IoU with the nucleus of `reference` it overlaps most."""
    ious = []
    for label in range(1, int(found.max()) + 1):
        mine = found == label
        under = reference[mine]
        under = under[under > 0]
        if under.size == 0:
            ious.append(0.0)
            continue
        theirs = reference == np.bincount(under).argmax()
        ious.append((mine & theirs).sum() / (mine | theirs).sum())
    return np.array(ious)


def test_regions_find_the_nuclei_of_the_whole_image(whole, in_regions):
    labels, _ = in_regions
    assert labels.dtype == np.uint32 and labels.shape == whole.shape
    assert np.array_equal(np.unique(labels)[1:], np.arange(1, labels.max() + 1))  # global, gap-free labels
    assert abs(int(labels.max()) - int(whole.max())) <= max(2, 0.02 * whole.max())
    ious = best_matches(labels, whole)
    assert np.median(ious) > 0.95 and (ious > 0.8).mean() > 0.95


def test_nuclei_crossing_a_seam_are_one_nucleus(whole, in_regions):
    labels, _ = in_regions
    crossing = [label for label in range(1, int(labels.max()) + 1)
                if any(len(np.unique(np.nonzero(labels == label)[axis] // REGION)) > 1 for axis in (0, 1))]
    assert len(crossing) >= 5  # the seams do cut nuclei
    for label in crossing:
        mine = labels == label
        under = whole[mine]
        theirs = whole == np.bincount(under[under > 0]).argmax()
        # the whole image's nucleus there is covered by this one nucleus, not by two halves
        assert np.isin(labels[theirs], [0, label]).mean() > 0.9


def test_each_region_measures_its_nuclei_as_the_whole_label_image_does(mosaic, in_regions):
    labels, rows = in_regions
    expected = measure_nuclei(labels, mosaic, mosaic, ["r", "g", "b"], 0.5)
    assert [r["label"] for r in sorted(rows, key=lambda r: r["label"])] == [r["label"] for r in expected]
    by_label = {r["label"]: r for r in rows}
    for want in expected:
        got = by_label[want["label"]]
        for column in ("area", "perimeter", "centroid_x", "centroid_y", "mean_intensity", "solidity"):
            assert got[column] == pytest.approx(want[column], rel=1e-9, abs=1e-9), column
        for column in ("centroid_x_um", "centroid_y_um", "mean_intensity_g", "max_intensity_b"):
            assert got["measures"][column] == pytest.approx(want["measures"][column], rel=1e-9), column


def test_small_images_take_the_whole_image_path(segmenter, dsb_samples):
    image = np.asarray(Image.open(dsb_samples[0].path))[..., :3]
    labels, rows = tiled.segment_and_measure(segmenter, image, lambda found, box: measure_nuclei(found, image[box]),
                                             None, whole_image_max_pixels=image.shape[0] * image.shape[1])
    assert np.array_equal(labels, segmenter.segment(image))
    assert rows == measure_nuclei(labels, image)


def test_regions_cover_the_image_once():
    parts = tiled.regions(1000, 700, region=256, margin=64)
    cover = np.zeros((1000, 700), int)
    for part in parts:
        cover[part.core] += 1
        assert part.outer[0].start == max(0, part.core[0].start - 64)
        assert part.outer[1].stop == min(700, part.core[1].stop + 64)
    assert (cover == 1).all()


def test_overlays_of_huge_images_are_drawn_downscaled():
    image, labels = np.zeros((10000, 3000), np.uint8), np.zeros((10000, 3000), np.uint32)
    small_image, small_labels = tiled.overlay_view(image, labels, max_pixels=4_000_000)
    assert small_labels.shape == (3334, 1000) and small_image.shape == (3334, 1000)
    assert np.shares_memory(small_labels, labels)
    assert tiled.overlay_view(image[:1000], labels[:1000], max_pixels=3_000_000)[1].shape == (1000, 3000)


def test_the_default_budget_admits_every_image_the_api_accepts():
    from shared.infra.settings import Settings

    settings = Settings()
    side = int(np.sqrt(settings.max_pixels))
    for bytes_per_pixel in (1, 2, 3):  # grey 8-bit, grey 16-bit and RGB 8-bit images at the pixel limit
        assert tiled.refusal(side, side, side * side * bytes_per_pixel, settings) is None
    for side in (256, 2048, 2828):  # and images of every size below it, through the whole-image path
        assert tiled.refusal(side, side, side * side * 3, settings) is None


def test_an_image_a_worker_cannot_hold_is_refused_at_upload(harness, experiment):
    from services.api import create_app

    buffer = io.BytesIO()
    Image.fromarray(np.full((300, 400), 20, np.uint8)).save(buffer, format="PNG")
    settings = harness.settings.model_copy(update={"worker_memory_bytes": 1 << 20})
    response = create_app(settings).test_client().post(
        f"/api/v1/experiments/{experiment}/images", data={"file": [(io.BytesIO(buffer.getvalue()), "wide.png")]},
        headers={"Authorization": f"Bearer {harness.token('uploader')}"}, content_type="multipart/form-data")
    assert response.status_code == 413, response.json
    error = response.json["error"]
    assert error["code"] == "image_too_large_for_worker"
    assert "wide.png" in error["message"] and "400x300" in error["message"] and "GiB" in error["message"]
    listed = harness.client("admin").get(f"/api/v1/experiments/{experiment}/results")
    assert listed.status_code == 200 and listed.json["total"] == 0  # nothing was accepted


def test_the_worker_segments_a_big_image_in_regions(use_settings, tmp_path, monkeypatch):
    """Through the worker: a two-channel image above the whole-image limit, cut by seams through its nuclei, gives
    each nucleus once with its every-channel measures, a uint label TIFF and an overlay."""
    import tifffile
    from sqlalchemy import select, update

    from services.worker.pipeline import process
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.tables import Image, Nucleus, Result
    from shared.infra.db.session import session_scope
    from shared.infra.db.session import write_scope
    from shared.infra.storage import get_store
    from testkit.channels import ome_tiff, two_channel_planes
    from testkit.pipeline import seed_job

    use_settings(tmp_path, whole_image_max_pixels=1000)
    monkeypatch.setattr(tiled, "REGION", 48)
    monkeypatch.setattr(tiled, "MARGIN", 32)
    upgrade(f"sqlite:///{tmp_path / 'nucleus.db'}")
    image_id, job_id = seed_job(ome_tiff(two_channel_planes()), filename="big.ome.tif", channel=0, enqueue=False)
    with write_scope() as session:
        session.execute(update(Image).where(Image.id == image_id).values(
            channel_names=["Hoechst", "EdU"], pixel_size_um=0.325, extra={"channel_name": "Hoechst"}))
    assert process(job_id, "test-worker").status == "done"
    with session_scope() as session:
        result = session.scalars(select(Result).where(Result.job_id == job_id)).one()
        nuclei = session.scalars(select(Nucleus).where(Nucleus.result_id == result.id)).all()
        maxima = sorted(round(n.measures["max_intensity_edu"]) for n in nuclei) if nuclei else []
        labels_key, overlay_key = result.labels_key, result.overlay_key
    labels = tifffile.imread(io.BytesIO(get_store().get(labels_key)))
    assert len(nuclei) == 4 and maxima == [0, 500, 1000, 1500]
    assert sorted(np.unique(labels)) == [0, 1, 2, 3, 4]
    assert get_store().get(overlay_key)[:8] == b"\x89PNG\r\n\x1a\n"
