"""The runtime is a speed choice, like the precision: ONNX Runtime and PyTorch must give the same maps."""
import numpy as np
import pytest
import torch

from shared.domain.imaging.imageio import read_image
from shared.domain.model import runtime
from shared.domain.model.segmenter import Segmenter


def test_runtime_names_are_checked():
    cpu = torch.device("cpu")
    assert runtime.resolve("torch", cpu, None) == "torch"
    assert runtime.resolve("onnx", cpu, None) == "onnx"
    with pytest.raises(ValueError, match="runtime must be one of"):
        runtime.resolve("tensorrt", cpu, None)
    with pytest.raises(ValueError, match="CPU only"):
        runtime.resolve("onnx", torch.device("cuda"), None)


def test_auto_picks_onnx_only_for_float32_on_the_cpu():
    assert runtime.resolve("auto", torch.device("cpu"), None) == "onnx"
    assert runtime.resolve("auto", torch.device("cpu"), torch.bfloat16) == "torch"
    assert runtime.resolve("auto", torch.device("cuda"), None) == "torch"
    assert Segmenter(precision="fp32").runtime == "onnx"


@pytest.mark.parametrize("views", [1, 8])
def test_onnx_and_torch_give_the_same_maps_and_nuclei(dsb_samples, views):
    onnx, plain = (Segmenter(precision="fp32", runtime=name, views=views) for name in ("onnx", "torch"))
    for sample in dsb_samples[:2]:
        image = read_image(sample.path)
        a, b = onnx.predict(image), plain.predict(image)
        for name in ("foreground", "boundary", "distance"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-4)
        np.testing.assert_array_equal(onnx.segment(image), plain.segment(image))


def test_onnx_runtime_tiles_a_large_image_as_torch_does():
    # Larger than the tile: the runtime gets odd-sized windows, each padded to the network's stride.
    rng = np.random.default_rng(0)
    image = (rng.random((300, 333)) * 255).astype(np.uint8)
    onnx, plain = (Segmenter(precision="fp32", runtime=name, tile=160, overlap=16) for name in ("onnx", "torch"))
    np.testing.assert_allclose(onnx.predict(image).foreground, plain.predict(image).foreground, atol=1e-4)
