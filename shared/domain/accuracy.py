"""Segmentation accuracy, as the nuclei literature reports it.

- pixel IoU: foreground vs foreground, instances ignored;
- AP at an IoU threshold: TP / (TP + FP + FN), a predicted nucleus matching a true one when their
  IoU exceeds the threshold (StarDist's and Cellpose's "average precision");
- the Data Science Bowl 2018 score: that quantity averaged over thresholds 0.50, 0.55, ..., 0.95;
- count error: |predicted - true| / true.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true nucleus (rows, labels 1..) with every predicted nucleus (columns)."""
    true = np.asarray(true).ravel()
    pred = np.asarray(pred).ravel()
    _, t = np.unique(true, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    has_bg_t, has_bg_p = (true == 0).any(), (pred == 0).any()
    n_t, n_p = t.max() + 1, p.max() + 1
    overlap = np.bincount(t * n_p + p, minlength=n_t * n_p).reshape(n_t, n_p).astype(np.float64)
    if has_bg_t:
        overlap = overlap[1:]
    if has_bg_p:
        overlap = overlap[:, 1:]
    area_t = np.bincount(t, minlength=n_t)[int(has_bg_t):, None]
    area_p = np.bincount(p, minlength=n_p)[None, int(has_bg_p):]
    union = area_t + area_p - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, overlap / union, 0.0)


def matches_at(iou: np.ndarray, threshold: float) -> int:
    """True positives at `threshold` (> 0.5 makes every match unique, so no assignment is needed)."""
    if iou.size == 0:
        return 0
    if threshold >= 0.5:
        return int((iou > threshold).sum())
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-iou)
    return int((iou[rows, cols] > threshold).sum())


def average_precision(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    iou = iou_matrix(true, pred)
    return _ap(iou, threshold)


def _ap(iou: np.ndarray, threshold: float) -> float:
    n_true, n_pred = iou.shape
    if n_true == 0 and n_pred == 0:
        return 1.0
    tp = matches_at(iou, threshold)
    return tp / (n_true + n_pred - tp)


def dsb_score(true: np.ndarray, pred: np.ndarray) -> float:
    iou = iou_matrix(true, pred)
    return float(np.mean([_ap(iou, t) for t in DSB_THRESHOLDS]))


def pixel_iou(true: np.ndarray, pred: np.ndarray) -> float:
    t, p = np.asarray(true) > 0, np.asarray(pred) > 0
    union = (t | p).sum()
    return 1.0 if union == 0 else float((t & p).sum() / union)


def count_error(true_count: int, pred_count: int) -> float:
    if true_count == 0:
        return 0.0 if pred_count == 0 else float("inf")
    return abs(pred_count - true_count) / true_count


def n_instances(labels: np.ndarray) -> int:
    values = np.unique(labels)
    return int((values != 0).sum())


@dataclass
class ImageScore:
    name: str
    kind: str
    pixel_iou: float
    ap50: float
    dsb: float
    true_count: int
    pred_count: int
    count_error: float


def score_image(name: str, kind: str, true: np.ndarray, pred: np.ndarray) -> ImageScore:
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    return ImageScore(
        name=name, kind=kind, pixel_iou=pixel_iou(true, pred), ap50=_ap(iou, 0.5),
        dsb=float(np.mean([_ap(iou, t) for t in DSB_THRESHOLDS])),
        true_count=n_true, pred_count=n_pred, count_error=count_error(n_true, n_pred),
    )


def summarize(scores: list[ImageScore]) -> dict:
    """Mean pixel IoU, AP50 and DSB score; median count error and share of images within 10 %."""
    if not scores:
        return {"images": 0}
    errors = np.array([s.count_error for s in scores])
    return {
        "images": len(scores),
        "pixel_iou": float(np.mean([s.pixel_iou for s in scores])),
        "ap50": float(np.mean([s.ap50 for s in scores])),
        "dsb_score": float(np.mean([s.dsb for s in scores])),
        "count_error_median": float(np.median(errors)),
        "count_within_10pct": float(np.mean(errors <= 0.10)),
    }


def summarize_by_kind(scores: list[ImageScore]) -> dict[str, dict]:
    out = {"all": summarize(scores)}
    for kind in sorted({s.kind for s in scores}):
        out[kind] = summarize([s for s in scores if s.kind == kind])
    return out


def as_rows(scores: list[ImageScore]) -> list[dict]:
    return [asdict(s) for s in scores]
