"""Per-nucleus measurements, in pixels and the image's own intensity units.

Intensities are read from the grey image (the chosen channel, or the mean of the colour
channels) without normalisation, so integrated intensity stays proportional to DNA content.
"""
from __future__ import annotations

import numpy as np
from skimage.measure import regionprops_table

COLUMNS = ("label", "area", "perimeter", "centroid_x", "centroid_y", "equivalent_diameter",
           "eccentricity", "solidity", "mean_intensity", "integrated_intensity")


def grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        return image[..., :3].astype(np.float64).mean(axis=2)
    return image.astype(np.float64)


def measure_nuclei(labels: np.ndarray, image: np.ndarray) -> list[dict]:
    if labels.max() == 0:
        return []
    props = regionprops_table(
        labels.astype(np.int32, copy=False), intensity_image=grey(image),
        properties=("label", "area", "perimeter", "centroid", "equivalent_diameter_area",
                    "eccentricity", "solidity", "intensity_mean"),
    )
    area = props["area"].astype(float)
    rows = []
    for i in range(len(props["label"])):
        rows.append({
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
        })
    return rows


def area_summary(rows: list[dict]) -> dict:
    if not rows:
        return {"mean": None, "median": None, "min": None, "max": None}
    areas = np.array([r["area"] for r in rows], dtype=float)
    return {"mean": float(areas.mean()), "median": float(np.median(areas)),
            "min": float(areas.min()), "max": float(areas.max())}
