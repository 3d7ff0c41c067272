"""One ONNX path: the torch Segmenter with the onnx runtime runs its graphs through onnx_inference.OnnxRunner, the
code the torch-free OnnxSegmenter runs, so the two give the same maps to the bit wherever both leave the image at
its size (they resize with torch and numpy respectively)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.domain.imaging.imageio import read_image
from shared.domain.model import onnx_inference
from shared.domain.model.preprocess import normalize
from shared.domain.model.segmenter import Segmenter, TorchRunner


@pytest.mark.parametrize("views", [1, 2])
def test_the_torch_segmenter_and_the_cached_one_share_their_onnx_maps(dsb_samples, tmp_path, views):
    torch_side = Segmenter(precision="fp32", runtime="onnx", graph_cache=tmp_path, tile=192, views=views)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    torch_side.scale_factor(noise)  # exports the encoder's graph, which the cached segmenter needs too
    cached = onnx_inference.cached(None, 192, views, None, "fp32", "onnx", tmp_path)
    assert isinstance(cached, onnx_inference.OnnxSegmenter)
    image = read_image(dsb_samples[0].path)
    # The trained diameter: no resizing, and the 256-pixel image runs in tiles of 192.
    got, expected = cached.predict(image, diameter=torch_side.diameter), torch_side.predict(image, torch_side.diameter)
    for name in ("foreground", "boundary", "distance"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    window = normalize(image[:100, :120])
    np.testing.assert_array_equal(cached.style(window), torch_side.style(torch.from_numpy(window)))


def test_each_runtime_runs_the_network_in_its_own_library():
    assert isinstance(Segmenter(precision="fp32", runtime="onnx").runner, onnx_inference.OnnxRunner)
    assert isinstance(Segmenter(precision="fp32", runtime="torch").runner, TorchRunner)
