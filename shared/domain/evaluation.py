"""Scoring a segmentation method on a labelled set, overall and per image type."""
from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np

from shared.domain.datasets.labelled import LabelledImage
from shared.domain.accuracy import ImageScore, score_image, summarize_by_kind

SegmentFn = Callable[[np.ndarray], np.ndarray]

METRIC_COLUMNS = (("images", "images", "{:d}"), ("pixel_iou", "pixel IoU", "{:.3f}"), ("ap50", "AP@0.5", "{:.3f}"),
                  ("dsb_score", "DSB score", "{:.3f}"), ("count_error_median", "count err (median)", "{:.1%}"),
                  ("count_within_10pct", "within 10%", "{:.0%}"), ("seconds_per_image", "s/image", "{:.3f}"))


def evaluate(segment: SegmentFn, items: Iterable[LabelledImage], progress=None) -> tuple[list[ImageScore], dict]:
    scores, seconds = [], []
    for item in items:
        start = time.perf_counter()
        pred = segment(item.image)
        seconds.append(time.perf_counter() - start)
        scores.append(score_image(item.name, item.kind, item.labels, pred))
        if progress:
            progress(item)
    summary = summarize_by_kind(scores)
    summary["all"]["seconds_per_image"] = float(np.mean(seconds)) if seconds else 0.0
    return scores, summary


def format_table(rows: dict[str, dict], first_column: str = "") -> str:
    """{row name: metrics dict} → a plain-text table."""
    header = [first_column] + [title for _, title, _ in METRIC_COLUMNS]
    lines = [header]
    for name, metrics in rows.items():
        line = [name]
        for key, _, fmt in METRIC_COLUMNS:
            value = metrics.get(key)
            line.append("" if value is None else fmt.format(value))
        lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
