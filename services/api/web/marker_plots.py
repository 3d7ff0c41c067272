"""A marker per condition on the history page: each nucleus's mean intensity in one channel, as a box and strip
plot per condition, and the fraction of nuclei above a threshold in that channel per condition.

Nuclei are streamed from the database in chunks, never held all at once: per condition the counts are exact
(all nuclei, and those above the threshold), while the box and its points come from a uniform random sample
of at most SAMPLE_PER_CONDITION nuclei (reservoir sampling, seeded so a page shows the same plot twice).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field, replace

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from services.api.errors import ApiError
from services.api.queries import STREAM_BATCH, ResultFilters, apply_filters, experiment_query
from shared.infra.db.tables import Experiment, Image, JobStatus, Nucleus, Result
from shared.domain.imaging.read_options import channel_columns

MARKER_PREFIX = "mean_intensity_"
SAMPLE_PER_CONDITION = 2000
MAX_CONDITIONS = 40  # conditions beyond this many (in name order) are left out, and the plot says so


@dataclass
class ConditionMarker:
    nuclei: int = 0
    above: int = 0
    sample: list[float] = field(default_factory=list)


def marker_choices(session: Session, experiment: Experiment, filters: ResultFilters) -> list[str]:
    """The channels whose mean intensity the (filtered) results measured, as column suffixes, in the order first
    seen. The channel lists come from the images, each distinct list once; per list one result of an image
    with it says which of its channels were measured (the worker measures the same columns for the same
    channels), so no page view scans the experiment's results."""
    if filters.status not in (None, JobStatus.done.value):
        return []  # only a done job has a result (jobs.complete writes both at once): nothing to search for
    listed = cast(Image.channel_names, Text)
    # the lists of the images that the image filters choose; the status or version filter is applied by the
    # search for a result below, which stops at the first (most of an experiment's jobs are done)
    by_image = replace(filters, status=None, version=None)
    query = apply_filters(select(listed, func.min(Image.created)).where(Image.experiment_id == experiment.id), by_image)
    suffixes: dict[str, None] = {}
    for text, _first in session.execute(query.group_by(listed).order_by(func.min(Image.created))).all():
        measured = session.scalar(experiment_query([Result.measure_columns], experiment, filters, with_result=True)
                                  .where(listed == text).limit(1))
        names = set(measured or ())
        suffixes.update(dict.fromkeys(suffix for suffix in channel_columns(json.loads(text) if text else [])
                                      if MARKER_PREFIX + suffix in names))
    return list(suffixes)


def parse_threshold(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ApiError(400, "invalid_query", f"threshold must be a number, not {text[:40]!r}")
    return value


def marker_by_condition(session: Session, experiment: Experiment, filters: ResultFilters, marker: str,
                        threshold: float | None) -> dict[str, ConditionMarker]:
    value = Nucleus.measures[MARKER_PREFIX + marker].as_float()
    query = (experiment_query([Image.condition, value], experiment, filters, with_result=True)
             .join(Nucleus, Nucleus.result_id == Result.id).where(value.is_not(None)))
    groups: dict[str, ConditionMarker] = {}
    rng = random.Random(0)
    for condition, intensity in session.execute(query.execution_options(yield_per=STREAM_BATCH)):
        group = groups.setdefault(condition or "(none)", ConditionMarker())
        group.nuclei += 1
        if threshold is not None and intensity > threshold:
            group.above += 1
        if len(group.sample) < SAMPLE_PER_CONDITION:
            group.sample.append(intensity)
        else:
            slot = rng.randrange(group.nuclei)
            if slot < SAMPLE_PER_CONDITION:
                group.sample[slot] = intensity
    return groups


def marker_png(groups: dict[str, ConditionMarker], marker: str, threshold: float | None) -> bytes:
    """Left: the marker per condition (box and points); right: the fraction of nuclei above the threshold."""
    import numpy as np
    from matplotlib.cbook import boxplot_stats
    from matplotlib.figure import Figure

    names = sorted(groups)[:MAX_CONDITIONS]
    panels = 2 if threshold is not None else 1
    figure = Figure(figsize=(6.0 * panels, 3.8), dpi=100, layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    if not names:
        ax.text(0.5, 0.5, f"no nuclei measured in {marker} yet", ha="center", va="center", transform=ax.transAxes,
                color="#666")
        ax.set_axis_off()
        return _png(figure)
    positions = range(1, len(names) + 1)
    samples = [np.asarray(groups[n].sample) for n in names]
    ax.bxp([boxplot_stats(s)[0] for s in samples], showfliers=False)
    rng = np.random.default_rng(0)
    for i, values in zip(positions, samples):
        shown = values if len(values) <= 300 else rng.choice(values, 300, replace=False)
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(shown)), shown, s=6, alpha=0.4, color="#1f77b4", zorder=3)
    if threshold is not None:
        ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1)
    _condition_ticks(ax, names)
    ax.set_ylabel(f"mean intensity, {marker}")
    sampled = any(groups[n].nuclei > SAMPLE_PER_CONDITION for n in names)
    title = f"{marker} per nucleus" + (f" (box: {SAMPLE_PER_CONDITION} sampled per condition)" if sampled else "")
    if len(groups) > len(names):
        title += f"; first {len(names)} of {len(groups)} conditions"
    ax.set_title(title, fontsize=10)
    if threshold is not None:
        bars = axes[1]
        fractions = [groups[n].above / groups[n].nuclei for n in names]
        bars.bar(list(positions), fractions, color="#2ca02c")
        for i, name in zip(positions, names):
            bars.annotate(f"{groups[name].above}/{groups[name].nuclei}", (i, fractions[i - 1]), ha="center",
                          va="bottom", fontsize=7)
        bars.set_ylim(0, 1.08)
        _condition_ticks(bars, names)
        bars.set_ylabel(f"fraction above {threshold:g}")
        bars.set_title(f"Nuclei with {marker} above {threshold:g}", fontsize=10)
    return _png(figure)


def _condition_ticks(ax, names: list[str]) -> None:
    tilt = len(names) > 4
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30 if tilt else 0, ha="right" if tilt else "center")


def _png(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
