"""The weights shipped inside the package: the default model wherever none is named. Torch-free."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED_WEIGHTS = "nucleus-dsb2018.pt"


def shipped_weights_path() -> Path:
    return Path(str(resources.files("shared.weights").joinpath(SHIPPED_WEIGHTS)))
