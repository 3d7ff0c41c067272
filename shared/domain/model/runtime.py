"""Where the network's forward pass runs: PyTorch, or ONNX Runtime on CPUs without native bfloat16.

The weights, the pre- and post-processing and the Segmenter are the same either way; only the code that runs
the network over an image's views differs (shared.domain.model.segmenter.TorchRunner, or
shared.domain.model.onnx_inference.OnnxRunner, which the torch-free OnnxSegmenter runs too). On a CPU with
AVX-512 BF16 (or AMX) PyTorch's bfloat16 convolutions are the fastest path (shared.domain.model.precision).
Without those instructions the network runs in float32, where ONNX Runtime's CPU kernels are faster than
PyTorch's (bench/README.md, "Figures behind defaults"). GPUs stay with PyTorch.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from shared.domain.model.options import RUNTIMES as CHOICES
from shared.domain.model import graph_cache
from shared.domain.model.onnx_inference import open_session


def resolve(runtime: str, device: torch.device, amp_dtype: torch.dtype | None) -> str:
    """The runtime, "torch" or "onnx", that `runtime` ("auto" picks) means on `device` at the resolved precision."""
    if runtime not in CHOICES:
        raise ValueError(f"runtime must be one of {', '.join(CHOICES)}, not {runtime!r}")
    if runtime == "onnx" and device.type != "cpu":
        raise ValueError("the onnx runtime runs on the CPU only; use runtime torch for a GPU")
    if runtime == "auto":
        return "onnx" if device.type == "cpu" and amp_dtype is None else "torch"
    return runtime


class TorchNetwork:
    def __init__(self, model: nn.Module, device: torch.device):
        self.module = model.to(device, memory_format=torch.channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.contiguous(memory_format=torch.channels_last))


def onnx_session(build: Callable[[], nn.Module], in_channels: int, maps: bool = True, cache_file: Path | None = None):
    """An ONNX Runtime session on the CPU for the network `build()` makes, exported (`maps`: it returns maps the
    size of its input, else one vector per image), with as many threads as PyTorch was given (the worker sets
    them). Exporting costs more than the rest of a start-up, so with `cache_file` the graph is kept there and
    read back next time; the caller names the file by everything the graph depends on."""
    threads = torch.get_num_threads()
    kept = graph_cache.read(cache_file) if cache_file is not None else None
    if kept is not None:
        try:
            return open_session(kept, threads)
        except Exception:  # a damaged or foreign file: export again and replace it
            pass
    graph = export_onnx(build(), in_channels, maps)
    if cache_file is not None:
        graph_cache.write(cache_file, graph)
    return open_session(graph, threads)


def _prune(folder: Path, keep: int = graph_cache.KEPT) -> None:
    graph_cache.prune(folder, "*.onnx", keep)


def export_onnx(model: nn.Module, in_channels: int, maps: bool = True) -> bytes:
    model = model.to(memory_format=torch.contiguous_format)
    graph = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which is much slower for this network
        # (it would delay a worker's start) and needs onnxscript; for a plain convolutional graph both give the
        # same model.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, in_channels, 64, 64),), graph,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": axes, "logits": axes if maps else {0: "batch"}}, dynamo=False)
    return graph.getvalue()
