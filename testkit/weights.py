"""The shipped network with its trained nucleus size replaced: to test view averaging or precision on images as
they come (no resize), or the resize itself at another target size."""
import io

import torch

from shared.domain.model.segmenter import shipped_weights_path


def shipped_weights(diameter: float | None) -> bytes:
    checkpoint = torch.load(shipped_weights_path(), map_location="cpu", weights_only=True)
    checkpoint["diameter"] = diameter
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()
