"""Weights files, without torch: their format, where the shipped ones are, how a file's version is named, and the
`.version` sidecar that lets processes without torch (the API) name weights without loading them.

A weights file is a torch.save'd dict (read with weights_only=True): "format" (CHECKPOINT_FORMAT), "name" (the
first half of the version), "config" (the UNet's shape), "state_dict" (half precision once exported),
"postprocess", "diameter" (the nucleus size the network was trained to see, or None), "extra" (the training
config and history), and, once exported with a size model, "size". shared.domain.model.segmenter writes and reads it.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

CHECKPOINT_FORMAT = "nucleus-unet/1"
SHIPPED_WEIGHTS = "nucleus-dsb2018.pt"
VERSION_SIDECAR_SUFFIX = ".version"


def shipped_weights_path() -> Path:
    """The weights shipped inside the package: the default model wherever none is named."""
    return Path(str(resources.files("shared.weights").joinpath(SHIPPED_WEIGHTS)))


def weights_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def version_of(raw: bytes, name: str) -> str:
    """The version results carry: the checkpoint's name and the first 8 hex digits of the file's SHA-256."""
    return f"{name}-{weights_digest(raw)[:8]}"


def sidecar_path(weights: Path) -> Path:
    """`x.pt` -> `x.version`: the version string of those weights, written when they are exported."""
    return Path(weights).with_suffix(VERSION_SIDECAR_SUFFIX)


def sidecar_version(weights: Path, raw: bytes | None = None) -> str | None:
    """The version in the weights' sidecar, or None when there is none. Given the weights' bytes, also
    None when the sidecar is stale (it does not end in their digest)."""
    try:
        version = sidecar_path(weights).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not version:
        return None
    if raw is not None and not version.endswith("-" + weights_digest(raw)[:8]):
        return None
    return version
