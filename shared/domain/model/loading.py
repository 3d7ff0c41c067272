"""Which segmenter a process loads: the torch-free one from the graph cache when it can (a warm `nucleus segment`
never imports torch), else the torch Segmenter, which fills the cache for the next process."""
from __future__ import annotations

from pathlib import Path

from shared.domain.model.onnx_inference import cached


def load_segmenter(weights: Path | None, settings, device: str | None = None):
    """The segmenter the NUCLEUS_* settings ask for: from the graph cache without torch when it can, else
    shared.domain.model.segmenter.Segmenter."""
    device = device or settings.device
    found = cached(weights, settings.tile_size, settings.test_time_views, device, settings.precision,
                   settings.runtime, settings.graph_cache_folder)
    if found is not None:
        return found
    from shared.domain.model.segmenter import Segmenter  # imports torch: only when the cache cannot answer

    return Segmenter.from_settings(weights, settings, device=device)
