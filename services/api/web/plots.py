"""Plots rendered on the server as PNG (matplotlib's object API, no pyplot: safe in threads)."""
from __future__ import annotations

import io
import re
from collections import defaultdict

import numpy as np

from services.api.queries import Histogram

WELL = re.compile(r"^([A-Pa-p])\s*0*(\d{1,2})$")
POINTS_PER_CONDITION = 500


def _figure(width=6.0, height=3.6):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _whole_numbers():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_axis_off()


def counts_by_condition_png(groups: dict[str, list[int]]) -> bytes:
    """Box plot of nuclei per image, one column per condition, with the images as points (a fixed-size
    random sample of them for a large condition)."""
    from matplotlib.cbook import boxplot_stats

    figure, ax = _figure()
    if not groups:
        _empty(ax, "no counts yet")
        return _png(figure)
    names = sorted(groups)
    values = [np.asarray(groups[n]) for n in names]
    ax.bxp([boxplot_stats(v)[0] for v in values], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    rng = np.random.default_rng(0)
    for i, counts in enumerate(values, start=1):
        if len(counts) > POINTS_PER_CONDITION:
            counts = rng.choice(counts, POINTS_PER_CONDITION, replace=False)
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(counts)), counts, s=14, alpha=0.7, color="#1f77b4", zorder=3)
    ax.set_ylabel("nuclei per image")
    ax.yaxis.set_major_locator(_whole_numbers())
    ax.set_title("Counts per condition")
    return _png(figure)


def area_histogram_png(histogram: Histogram, title: str = "Nucleus area") -> bytes:
    """The histogram's bins as the database counted them."""
    figure, ax = _figure()
    if not histogram.total:
        _empty(ax, "no nuclei yet")
        return _png(figure)
    ax.stairs(histogram.counts, histogram.edges, fill=True, color="#2ca02c", alpha=0.85)
    ax.yaxis.set_major_locator(_whole_numbers())  # no half nuclei on the axis
    ax.set_xlabel("area (pixels)")
    ax.set_ylabel("nuclei")
    ax.set_title(title)
    return _png(figure)


def plate_heatmap_png(means: dict[str, float]) -> bytes:
    """Mean count per well on a plate layout (96 wells, or 384 when a well beyond H12 appears); `means`
    by well name (spellings of one well such as A1 and A01 are averaged together)."""
    sums: dict[tuple[int, int], list[float]] = defaultdict(list)
    for well, mean in means.items():
        match = WELL.match(well or "")
        if match:
            sums[(ord(match.group(1).upper()) - 65, int(match.group(2)) - 1)].append(mean)
    figure, ax = _figure(6.4, 4.0)
    if not sums:
        _empty(ax, "no counts for wells like A01 yet")
        return _png(figure)
    big = any(r >= 8 or c >= 12 for r, c in sums)
    n_rows, n_cols = (16, 24) if big else (8, 12)
    grid = np.full((n_rows, n_cols), np.nan)
    for (r, c), counts in sums.items():
        if r < n_rows and c < n_cols:
            grid[r, c] = float(np.mean(counts))
    image = ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(n_cols), [str(c + 1) for c in range(n_cols)], fontsize=7)
    ax.set_yticks(range(n_rows), [chr(65 + r) for r in range(n_rows)], fontsize=7)
    figure.colorbar(image, ax=ax, label="mean nuclei per image")
    ax.set_title("Count per well")
    return _png(figure)
