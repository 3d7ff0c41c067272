"""Nuclei shown to the network at one size: measured, resized for training, and for inference."""
import numpy as np
import pytest
from skimage.draw import disk
from skimage.transform import rescale

from shared.domain.datasets.labelled import LabelledImage
from shared.domain.imaging.imageio import read_image
from shared.domain.model import scale
from shared.domain.model.segmenter import Segmenter, fine_tuning_config
from shared.domain.training.loop import prepare
from testkit.weights import shipped_weights


def _disks(shape, centres_and_radii) -> np.ndarray:
    labels = np.zeros(shape, np.uint16)
    for i, (centre, radius) in enumerate(centres_and_radii, start=1):
        labels[disk(centre, radius, shape=shape)] = i
    return labels


def test_the_median_nucleus_gives_the_diameter():
    labels = _disks((120, 120), [((20, 20), 5), ((60, 60), 8), ((95, 95), 12)])
    assert scale.median_diameter(labels) == pytest.approx(16, abs=0.5)
    assert scale.median_diameter(np.zeros((10, 10), np.uint16)) == 0.0


def test_the_factor_is_bounded_and_ignores_small_changes():
    assert scale.factor(11, 22) == pytest.approx(2.0)
    assert scale.factor(5, 22) == scale.MAX_FACTOR
    assert scale.factor(5, 22, largest=1.4) == 1.4
    assert scale.factor(100, 22) == scale.MIN_FACTOR
    assert scale.factor(30, 22) == pytest.approx(22 / 30)
    assert scale.factor(20, 22) == 1.0  # within 15 %: not worth a resize
    assert scale.factor(0, 22) == 1.0 and scale.factor(11, None) == 1.0


def test_resized_labels_stay_labels():
    labels = _disks((64, 80), [((20, 20), 6), ((40, 50), 9)])
    bigger = scale.resize_labels(labels, (128, 160))
    assert bigger.dtype == labels.dtype and set(np.unique(bigger)) == {0, 1, 2}
    assert scale.median_diameter(bigger) == pytest.approx(2 * scale.median_diameter(labels), rel=0.05)


def test_training_shows_small_nuclei_enlarged_to_the_trained_diameter():
    labels = _disks((100, 100), [((25, 25), 5), ((25, 70), 5), ((70, 40), 5)])
    image = np.where(labels > 0, 200, 10).astype(np.uint8)
    item = LabelledImage("small", image, labels, "fluorescence")
    [as_is] = prepare([item])
    [enlarged] = prepare([item], diameter=22)
    assert as_is.image.shape == (3, 100, 100)
    assert enlarged.image.shape == (3, 200, 200) and enlarged.targets.shape[1:] == (200, 200)
    from scipy import ndimage as ndi
    nuclei, count = ndi.label(enlarged.targets[0] > 0.5)
    assert count == 3 and scale.median_diameter(nuclei) == pytest.approx(20, abs=1.5)


@pytest.fixture(scope="module")
def image(dsb_samples):
    return read_image(dsb_samples[0].path)


def test_weights_keep_the_diameter_they_were_trained_at_and_their_shape():
    kept = fine_tuning_config(shipped_weights(22.0))
    assert kept["diameter"] == 22.0
    network = Segmenter(shipped_weights(22.0), precision="fp32").unet.config
    assert (kept["base"], kept["depth"]) == (network["base"], network["depth"])
    assert fine_tuning_config(shipped_weights(None))["diameter"] is None


def test_an_image_and_its_enlargement_give_the_same_nuclei(image, dsb_samples):
    segmenter = Segmenter(shipped_weights(22.0), precision="fp32", views=1)
    enlarged = (rescale(image.astype(np.float32), 2, order=1, channel_axis=-1 if image.ndim == 3 else None,
                        anti_aliasing=False)).astype(image.dtype)
    assert segmenter.scale_factor(np.zeros((8, 8), np.uint8)) == 1.0
    small, large = segmenter.segment(image), segmenter.segment(enlarged)
    assert small.shape == image.shape[:2] and large.shape == enlarged.shape[:2]
    count, n_small, n_large = dsb_samples[0].count, int(small.max()), int(large.max())
    assert abs(n_small - count) <= max(2, 0.1 * count)
    assert abs(n_large - n_small) <= max(2, 0.1 * n_small)


def test_weights_without_a_diameter_see_images_as_they_come(image):
    assert Segmenter(shipped_weights(None), views=1).scale_factor(image) == 1.0
    assert Segmenter(shipped_weights(44.0), views=1).scale_factor(image) > 1.0
