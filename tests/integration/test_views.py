"""Test-time augmentation: the network's maps averaged over flips and 90° turns of the image.

Averaging over a set of views that is closed under a transform makes the result follow that transform:
segmenting a mirrored image must give the mirrored maps. A wrong inverse transform breaks exactly that.
The network sees the images as they come here: the nucleus-size resize (tests/integration/test_scale.py) would add its own,
measured, factor to each view.
"""
import numpy as np
import pytest

from shared.domain.imaging.imageio import read_image
from shared.domain.model.segmenter import Segmenter
from testkit.weights import shipped_weights

AS_THEY_COME = shipped_weights(diameter=None)


def _maps(segmenter: Segmenter, image: np.ndarray) -> np.ndarray:
    p = segmenter.predict(np.ascontiguousarray(image))
    return np.stack([p.foreground, p.boundary, p.distance])


@pytest.fixture(scope="module")
def image(dsb_samples):
    return read_image(dsb_samples[0].path)


def test_two_views_follow_a_mirrored_image(image):
    segmenter = Segmenter(AS_THEY_COME, precision="fp32", views=2)
    maps, mirrored = _maps(segmenter, image), _maps(segmenter, image[:, ::-1])
    np.testing.assert_allclose(mirrored[:, :, ::-1], maps, atol=1e-4)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_eight_views_follow_a_turned_image(image, turns):
    segmenter = Segmenter(AS_THEY_COME, precision="fp32", views=8)
    maps, turned = _maps(segmenter, image), _maps(segmenter, np.rot90(image, turns))
    np.testing.assert_allclose(np.rot90(turned, -turns, axes=(1, 2)), maps, atol=1e-4)
    labels, turned_labels = segmenter.segment(image), segmenter.segment(np.ascontiguousarray(np.rot90(image, turns)))
    assert labels.max() == turned_labels.max() > 0


def test_one_view_is_the_plain_network_and_more_views_change_the_maps(image):
    one, two = (Segmenter(AS_THEY_COME, precision="fp32", views=v) for v in (1, 2))
    plain, averaged = _maps(one, image), _maps(two, image)
    mirrored = _maps(one, image[:, ::-1])[:, :, ::-1]
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, atol=1e-4)
    assert np.abs(plain - averaged).max() > 1e-3  # the network alone is not mirror-symmetric


def test_an_unknown_number_of_views_is_refused():
    with pytest.raises(ValueError, match="views must be one of"):
        Segmenter(views=3)
