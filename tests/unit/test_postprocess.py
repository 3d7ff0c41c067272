"""Instance separation on synthetic touching nuclei (shapes whose right answer is known)."""
import numpy as np
from skimage.draw import disk

from shared.domain.model.targets import contact_zone, instance_targets
from shared.domain.segmentation.postprocess import PostprocessSettings, classical, connected_components, instances


def touching_pair(shape=(80, 120)):
    labels = np.zeros(shape, np.uint16)
    labels[disk((40, 40), 18, shape=shape)] = 1
    labels[disk((40, 72), 16, shape=shape)] = 2  # overlaps the first: one blob in a binary mask
    return labels


def test_targets_separate_what_the_foreground_merges():
    labels = touching_pair()
    fg, boundary, distance = instance_targets(labels)
    assert connected_components(fg).max() == 1
    separated = instances(fg, boundary, distance)
    assert separated.max() == 2
    # each predicted nucleus sits on one true nucleus
    for value in (1, 2):
        assert len(np.unique(labels[separated == value])) == 1


def test_the_contact_zone_lies_where_nuclei_touch_or_nearly_touch():
    labels = touching_pair((80, 200))
    labels[30:50, 120:140] = 3  # 4 px of background from nucleus 4: nearly touching
    labels[30:50, 144:160] = 4
    labels[5:15, 185:195] = 5  # alone
    zone = contact_zone(labels, radius=3)
    rows, cols = np.nonzero(zone)
    touching = cols < 100
    assert touching.any() and abs(cols[touching].mean() - 57) < 3  # around the line where disks 1 and 2 meet
    gap = (cols >= 100) & (cols < 170)
    assert set(cols[gap]) == {141, 142}  # the middle of the 4-px gap (cols 140-143) is within 3 px of both
    assert not zone[:, 170:].any() and not zone[:, 100:117].any()


def test_tiny_nuclei_without_a_seed_are_kept():
    labels = np.zeros((30, 30), np.uint16)
    labels[5:9, 5:9] = 1  # 16 px: too thin for an interior seed
    fg, boundary, distance = instance_targets(labels)
    assert instances(fg, boundary, distance).max() == 1


def test_classical_baseline_handles_both_polarities():
    labels = touching_pair()
    bright_on_dark = np.where(labels > 0, 200, 20).astype(np.uint8)
    dark_on_bright = 255 - bright_on_dark
    assert classical(bright_on_dark).max() == 2
    assert classical(dark_on_bright).max() == 2


def two_peaks(apart: int) -> np.ndarray:
    """A distance map with two cone-shaped peaks `apart` pixels apart, joined by a saddle."""
    yy, xx = np.mgrid[:60, :80]
    cone = lambda cx: 1 - np.hypot(yy - 30, xx - cx) / 20
    return np.clip(np.maximum(cone(40 - apart / 2), cone(40 + apart / 2)), 0, 1)


def test_only_peaks_that_stand_out_become_separate_nuclei():
    shallow, deep = two_peaks(6), two_peaks(16)  # saddles 0.15 and 0.4 below the peaks
    def count(relief, seed_height):
        fg = (relief > 0.2).astype(np.float32)
        return instances(fg, np.zeros_like(fg), relief, PostprocessSettings(seed_height=seed_height, smoothing=0)).max()

    assert count(shallow, 0.2) == 1
    assert count(deep, 0.2) == 2
    assert count(shallow, 0.05) == 2


def test_objects_the_network_is_unsure_of_are_dropped():
    labels = touching_pair((80, 160))
    labels[disk((40, 130), 12, shape=labels.shape)] = 3
    fg, boundary, distance = instance_targets(labels)
    fg = np.where(labels == 3, 0.7, fg)  # above the foreground threshold, below the confidence floor
    assert instances(fg, boundary, distance, PostprocessSettings(min_confidence=0.8)).max() == 2
    assert instances(fg, boundary, distance, PostprocessSettings(min_confidence=0)).max() == 3


def test_settings_stored_by_an_older_post_processing_still_load():
    stored = {"foreground_threshold": 0.55, "seed_threshold": 0.3, "boundary_threshold": 0.5, "min_size": 12}
    settings = PostprocessSettings.from_dict(stored)
    assert (settings.foreground_threshold, settings.min_size) == (0.55, 12)
    assert settings.seed_height == PostprocessSettings().seed_height
