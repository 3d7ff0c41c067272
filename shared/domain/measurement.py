"""Per-nucleus measurements: shape in pixels (and µm where the pixel size is known), intensity per channel.

Intensities are read without normalisation, so integrated intensity stays proportional to DNA content.
`mean_intensity`/`integrated_intensity` are those of the segmented image (the nuclear channel, or the mean
of an RGB photo's colours); every channel of the input also gets its own mean, integrated and max
intensity, named by channel (shared.domain.imaging.reading.channel_columns). These extra columns travel in each row's
`measures` dict, in the order `measure_columns` gives.
"""
from __future__ import annotations

import numpy as np
from skimage.measure import regionprops_table

COLUMNS = ("label", "area", "perimeter", "centroid_x", "centroid_y", "equivalent_diameter",
           "eccentricity", "solidity", "mean_intensity", "integrated_intensity")
CHANNEL_MEASURES = ("mean_intensity", "integrated_intensity", "max_intensity")
# pixel column -> (µm column, power of the pixel size)
PHYSICAL = {"area": ("area_um2", 2), "perimeter": ("perimeter_um", 1),
            "equivalent_diameter": ("equivalent_diameter_um", 1),
            "centroid_x": ("centroid_x_um", 1), "centroid_y": ("centroid_y_um", 1)}


def grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        return image[..., :3].astype(np.float64).mean(axis=2)
    return image.astype(np.float64)


def measure_columns(channel_suffixes: list[str] | None, pixel_size_um: float | None) -> list[str]:
    """The extra columns, in table order: per channel its mean, integrated and max intensity, then µm shapes."""
    names = [f"{m}_{c}" for c in channel_suffixes or () for m in CHANNEL_MEASURES]
    if pixel_size_um:
        names += [column for column, _ in PHYSICAL.values()]
    return names


def measure_nuclei(labels: np.ndarray, image: np.ndarray, channels: np.ndarray | None = None,
                   channel_suffixes: list[str] | None = None, pixel_size_um: float | None = None) -> list[dict]:
    """One dict per nucleus with COLUMNS, and `measures` holding measure_columns(...) when channels
    (HxWxC, named by `channel_suffixes`) or a pixel size are given."""
    if labels.max() == 0:
        return []
    props = regionprops_table(
        labels.astype(np.int32, copy=False), intensity_image=grey(image),
        properties=("label", "area", "perimeter", "centroid", "equivalent_diameter_area",
                    "eccentricity", "solidity", "intensity_mean"),
    )
    area = props["area"].astype(float)
    per_channel = _channel_intensities(labels, props["label"], channels, channel_suffixes)
    rows = []
    for i in range(len(props["label"])):
        row = {
            "label": int(props["label"][i]),
            "area": float(area[i]),
            "perimeter": float(props["perimeter"][i]),
            "centroid_x": float(props["centroid-1"][i]),
            "centroid_y": float(props["centroid-0"][i]),
            "equivalent_diameter": float(props["equivalent_diameter_area"][i]),
            "eccentricity": float(props["eccentricity"][i]),
            "solidity": float(props["solidity"][i]),
            "mean_intensity": float(props["intensity_mean"][i]),
            "integrated_intensity": float(props["intensity_mean"][i] * area[i]),
        }
        measures = {name: float(values[i]) for name, values in per_channel.items()}
        if pixel_size_um:
            for column, (physical, power) in PHYSICAL.items():
                measures[physical] = row[column] * pixel_size_um ** power
        if channels is not None or pixel_size_um:
            row["measures"] = measures
        rows.append(row)
    return rows


def _channel_intensities(labels: np.ndarray, label_ids: np.ndarray, channels: np.ndarray | None,
                         suffixes: list[str] | None) -> dict[str, np.ndarray]:
    """Mean, integrated and max intensity of each nucleus in each channel, one channel in memory at a time."""
    if channels is None:
        return {}
    from scipy import ndimage

    if channels.ndim == 2:
        channels = channels[..., np.newaxis]
    if suffixes is None or len(suffixes) != channels.shape[2]:
        raise ValueError(f"{channels.shape[2]} channels but {len(suffixes or ())} channel names")
    counts = ndimage.sum_labels(np.ones(labels.shape, np.float64), labels, label_ids)
    out = {}
    for c, suffix in enumerate(suffixes):
        plane = channels[..., c]
        sums = ndimage.sum_labels(plane.astype(np.float64, copy=False), labels, label_ids)
        out[f"mean_intensity_{suffix}"] = sums / counts
        out[f"integrated_intensity_{suffix}"] = sums
        out[f"max_intensity_{suffix}"] = np.asarray(ndimage.maximum(plane, labels, label_ids), dtype=np.float64)
    ordered = measure_columns(suffixes, None)
    return {name: out[name] for name in ordered}


def area_summary(rows: list[dict]) -> dict:
    if not rows:
        return {"mean": None, "median": None, "min": None, "max": None}
    areas = np.array([r["area"] for r in rows], dtype=float)
    return {"mean": float(areas.mean()), "median": float(np.median(areas)),
            "min": float(areas.min()), "max": float(areas.max())}
