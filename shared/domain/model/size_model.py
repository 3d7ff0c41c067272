"""The size model's regression and the window it reads, without torch (shared.domain.model.size fits it)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

WINDOW = 512  # the size is measured on at most the central WINDOW x WINDOW pixels
# Ridge penalty on standardised features; chosen by five-fold cross-validation on the training split.
RIDGE = 100.0
_FLOOR = 1e-3  # features are logged: channel statistics span orders of magnitude


@dataclass
class SizeModel:
    """log(median nucleus diameter in pixels) = standardised log(style) . coef + intercept."""
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    @classmethod
    def fit(cls, styles: np.ndarray, diameters: np.ndarray, ridge: float = RIDGE) -> "SizeModel":
        x = np.log(np.asarray(styles, np.float64) + _FLOOR)
        y = np.log(np.asarray(diameters, np.float64))
        mean, spread = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - mean) / spread
        coef = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (y - y.mean()))
        return cls(mean.tolist(), spread.tolist(), coef.tolist(), float(y.mean()))

    def diameter(self, style: np.ndarray) -> float:
        z = (np.log(np.asarray(style, np.float64) + _FLOOR) - self.mean) / self.scale
        return float(math.exp(z @ np.asarray(self.coef) + self.intercept))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict | None) -> "SizeModel | None":
        return cls(**stored) if stored else None


def is_blank(x) -> bool:
    """An image without contrast (normalised to a constant) has no nuclei for the size model to measure.
    `x`: a CxHxW numpy array or CPU tensor."""
    values = np.asarray(x)
    return float(values.std(ddof=1)) < 1e-3 if values.size > 1 else True


def central_window(x, side: int = WINDOW):
    """The central side x side pixels of a CxHxW image (all of it where it is smaller); numpy or torch."""
    _, height, width = x.shape
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return x[:, top:top + side, left:left + side]
