"""What the network predicts for one image. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Prediction:
    foreground: np.ndarray
    boundary: np.ndarray
    distance: np.ndarray
    labels: np.ndarray | None = None  # the instances, when the size measurement already made them from these maps
