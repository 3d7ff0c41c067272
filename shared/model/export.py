"""Files written beside exported weights."""
from __future__ import annotations

from pathlib import Path

from shared.model.segmenter import weights_version
from shared.registry import sidecar_path


def write_version_sidecar(weights_path: Path | str) -> Path:
    """Write `<weights>.version` holding the weights' version string, so that processes without torch
    (the API) can register and name them. Call it whenever weights are exported."""
    weights_path = Path(weights_path)
    target = sidecar_path(weights_path)
    target.write_text(weights_version(weights_path.read_bytes()) + "\n")
    return target
