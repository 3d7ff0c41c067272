"""Metrics on hand-made label images whose right answers can be worked out by hand."""
import numpy as np
import pytest

from shared.domain.accuracy import (average_precision, count_error, dsb_score, iou_matrix, pixel_iou, score_image,
                            summarize)


def square(shape, top, left, size, value, out=None):
    out = np.zeros(shape, np.uint16) if out is None else out
    out[top:top + size, left:left + size] = value
    return out


def test_identical_labels_score_perfectly():
    true = square((20, 20), 2, 2, 5, 1)
    square((20, 20), 10, 10, 6, 2, true)
    pred = true.copy() * 3  # label values need not agree
    assert average_precision(true, pred) == 1.0
    assert dsb_score(true, pred) == 1.0
    assert pixel_iou(true, pred) == 1.0


def test_iou_matrix_of_shifted_square():
    true = square((10, 10), 0, 0, 4, 1)  # 16 px
    pred = square((10, 10), 0, 2, 4, 1)  # overlaps in 8 px, union 24
    assert iou_matrix(true, pred) == pytest.approx(np.array([[8 / 24]]))


def test_ap_counts_tp_fp_fn():
    # two true nuclei; prediction finds one exactly, misses one, adds one spurious
    true = square((30, 30), 0, 0, 5, 1)
    square((30, 30), 10, 10, 5, 2, true)
    pred = square((30, 30), 0, 0, 5, 1)
    square((30, 30), 20, 20, 5, 2, pred)
    # TP = 1, FP = 1, FN = 1 → 1 / 3
    assert average_precision(true, pred, 0.5) == pytest.approx(1 / 3)


def test_merged_nuclei_are_one_false_positive_and_two_misses():
    true = square((10, 20), 0, 0, 5, 1)
    square((10, 20), 0, 5, 5, 2, true)  # touching neighbours
    pred = (true > 0).astype(np.uint16)  # one merged blob: IoU 0.5 with each, not above it
    assert average_precision(true, pred, 0.5) == 0.0
    assert pixel_iou(true, pred) == 1.0


def test_dsb_score_averages_thresholds():
    true = square((10, 10), 0, 0, 10, 1)  # 100 px
    pred = square((10, 10), 0, 0, 10, 1)
    pred[:, 9] = 0  # 90 px inside: IoU 0.9, a match at thresholds 0.50..0.85 (8 of 10)
    assert dsb_score(true, pred) == pytest.approx(0.8)


def test_empty_images():
    empty = np.zeros((5, 5), np.uint16)
    assert average_precision(empty, empty) == 1.0
    assert pixel_iou(empty, empty) == 1.0
    one = square((5, 5), 1, 1, 2, 1)
    assert average_precision(one, empty) == 0.0
    assert average_precision(empty, one) == 0.0


def test_count_error_and_summary():
    assert count_error(100, 95) == pytest.approx(0.05)
    assert count_error(0, 0) == 0.0
    true = square((30, 30), 0, 0, 5, 1)
    square((30, 30), 10, 10, 5, 2, true)
    perfect = score_image("a", "fluorescence", true, true)
    half = score_image("b", "stained", true, square((30, 30), 0, 0, 5, 1))
    summary = summarize([perfect, half])
    assert summary["ap50"] == pytest.approx((1 + 0.5) / 2)
    assert summary["count_error_median"] == pytest.approx(0.25)
    assert summary["count_within_10pct"] == 0.5
