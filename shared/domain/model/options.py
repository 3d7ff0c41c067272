"""The choices inference offers, torch-free so that command-line parsers and settings can name them."""
from __future__ import annotations

# Numeric precisions for the network (shared.domain.model.precision).
PRECISIONS = ("auto", "bf16", "fp32")
# Where the network runs (shared.domain.model.runtime); auto: ONNX Runtime on a CPU without native bfloat16,
# else PyTorch.
RUNTIMES = ("auto", "torch", "onnx")
# Test-time augmentation: the network's maps are averaged over this many of the eight flips and 90° turns of
# each image, each view costing one network pass. Images are shown to the network at its trained nucleus size
# (shared.domain.model.scale), so more views add almost nothing (bench/README.md): one is the default.
VIEWS = (1, 2, 4, 8)
DEFAULT_VIEWS = 1
# Images (after resizing to the trained nucleus size) with a side longer than this run in overlapping tiles.
# Each tile's margins are computed twice, so small tiles cost time; large ones cost memory (bench/README.md).
DEFAULT_TILE = 2048
