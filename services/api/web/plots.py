"""Plots rendered on the server as PNG (matplotlib's object API, no pyplot: safe in threads)."""
from __future__ import annotations

import io
import re
from collections import defaultdict

import numpy as np

WELL = re.compile(r"^([A-Pa-p])\s*0*(\d{1,2})$")


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


def counts_by_condition_png(rows: list[dict]) -> bytes:
    """Box plot with every image as a point, one column per condition."""
    groups: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row["count"] is not None:
            groups[row["condition"] or "(none)"].append(row["count"])
    figure, ax = _figure()
    if not groups:
        _empty(ax, "no counts yet")
        return _png(figure)
    names = sorted(groups)
    values = [groups[n] for n in names]
    ax.boxplot(values, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    rng = np.random.default_rng(0)
    for i, counts in enumerate(values, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(counts)), counts, s=14, alpha=0.7, color="#1f77b4", zorder=3)
    ax.set_ylabel("nuclei per image")
    ax.yaxis.set_major_locator(_whole_numbers())
    ax.set_title("Counts per condition")
    return _png(figure)


def area_histogram_png(areas: list[float], title: str = "Nucleus area") -> bytes:
    figure, ax = _figure()
    if not areas:
        _empty(ax, "no nuclei yet")
        return _png(figure)
    ax.hist(areas, bins=min(60, max(10, int(np.sqrt(len(areas))))), color="#2ca02c", alpha=0.85)
    ax.yaxis.set_major_locator(_whole_numbers())  # no half nuclei on the axis
    ax.set_xlabel("area (pixels)")
    ax.set_ylabel("nuclei")
    ax.set_title(title)
    return _png(figure)


def plate_heatmap_png(rows: list[dict]) -> bytes:
    """Mean count per well on a plate layout (96 wells, or 384 when a well beyond H12 appears)."""
    sums: dict[tuple[int, int], list[int]] = defaultdict(list)
    for row in rows:
        match = WELL.match(row["well"] or "")
        if match and row["count"] is not None:
            sums[(ord(match.group(1).upper()) - 65, int(match.group(2)) - 1)].append(row["count"])
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
