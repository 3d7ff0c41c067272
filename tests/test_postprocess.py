"""Instance separation on synthetic touching nuclei (shapes whose right answer is known)."""
import numpy as np
from skimage.draw import disk

from shared.model.targets import instance_targets
from shared.postprocess import classical, connected_components, instances


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
