"""Segmenting from a warm graph cache without torch (shared.domain.model.onnx_inference): the same labels as the torch
Segmenter running the same ONNX graphs, and a second `nucleus segment` process that never imports torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from shared.domain.imaging.imageio import read_image
from shared.domain.model import onnx_inference, scale
from shared.domain.model.segmenter import Segmenter
from shared.domain.segmentation.postprocess import instances

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    """A graph cache the torch Segmenter has filled (exporting costs more than the rest of these tests)."""
    folder = tmp_path_factory.mktemp("graphs")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    Segmenter(precision="fp32", runtime="onnx", graph_cache=folder).scale_factor(noise)  # exports the encoder's too
    assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["segmenter", "style", "unet"]
    return folder


@pytest.mark.parametrize("source, target", [((64, 80), (100, 131)), ((100, 131), (64, 80)), ((37, 50), (37, 71))])
def test_numpy_resize_matches_torch_bilinear(source, target):
    x = np.random.default_rng(0).random((3, *source), dtype=np.float32)
    expected = scale.resize_maps(torch.from_numpy(x), target).numpy()
    # torch computes its interpolation weights in float32
    np.testing.assert_allclose(onnx_inference.resize_maps(x, target), expected, atol=1e-5)


@pytest.mark.parametrize("tile, views, samples", [(512, 2, 4), (256, 1, 2)])
def test_cached_segmenter_gives_the_torch_segmenters_labels(dsb_samples, graphs, tile, views, samples):
    reference = Segmenter(precision="fp32", runtime="onnx", graph_cache=graphs, tile=tile, views=views)
    fast = onnx_inference.cached(None, tile, views, None, "fp32", "onnx", graphs)
    assert isinstance(fast, onnx_inference.OnnxSegmenter) and fast.version == reference.version
    for sample in dsb_samples[:samples]:
        image = read_image(sample.path)
        assert fast.scale_factor(image) == pytest.approx(reference.scale_factor(image), rel=1e-4)
        got, expected = fast.predict(image), reference.predict(image)
        for name in ("foreground", "boundary", "distance"):
            np.testing.assert_allclose(getattr(got, name), getattr(expected, name), atol=1e-4)
        np.testing.assert_array_equal(instances(got.foreground, got.boundary, got.distance, fast.postprocess),
                                      instances(*(getattr(expected, name) for name in ("foreground", "boundary",
                                                                                        "distance")),
                                                reference.postprocess))
    enlarged = read_image(dsb_samples[0].path)
    np.testing.assert_array_equal(fast.segment(enlarged, diameter=9.0), reference.segment(enlarged, diameter=9.0))


def test_a_cold_or_foreign_cache_loads_nothing(graphs, tmp_path):
    assert onnx_inference.cached(None, 512, 2, None, "fp32", "onnx", tmp_path) is None
    for kept in graphs.iterdir():
        (tmp_path / kept.name).write_bytes(kept.read_bytes())
    assert onnx_inference.cached(None, 512, 2, None, "fp32", "onnx", tmp_path) is not None
    assert onnx_inference.cached(None, 512, 2, None, "auto", "onnx", tmp_path) is None  # asked otherwise
    assert onnx_inference.cached(None, 512, 2, None, "fp32", "torch", tmp_path) is None
    for graph in tmp_path.glob("unet-*.onnx"):
        graph.write_bytes(b"not a graph")
    assert onnx_inference.cached(None, 512, 2, None, "fp32", "onnx", tmp_path) is None


# Runs `nucleus segment` in this process, then says whether torch was imported.
SEGMENT_AND_REPORT = """
import sys
from nucleus.cli import main
try:
    main(sys.argv[1:], prog_name="nucleus")
except SystemExit as exit:
    assert not exit.code, exit.code
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


def test_a_second_segment_process_does_not_import_torch(dsb_samples, graphs, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for sample in dsb_samples[:2]:
        (images / Path(sample.path).name).write_bytes(Path(sample.path).read_bytes())
    # The graphs are exported already, but not the record for these settings: the first run takes the torch path.
    env = {**os.environ, "NUCLEUS_GRAPH_CACHE_DIR": str(graphs), "NUCLEUS_PRECISION": "fp32",
           "NUCLEUS_RUNTIME": "auto", "NUCLEUS_DEVICE": "cpu"}

    def segment(out: str) -> str:
        run = subprocess.run([sys.executable, "-c", SEGMENT_AND_REPORT, "segment", str(images), "--out",
                              str(tmp_path / out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        return run.stdout.strip().splitlines()[-1]

    assert segment("first") == "torch imported"
    assert segment("second") == "torch not imported"
    for sample in dsb_samples[:2]:
        stem = Path(sample.path).stem
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "second" / f"{stem}_labels.tif"),
                                      tifffile.imread(tmp_path / "first" / f"{stem}_labels.tif"))
    assert (tmp_path / "second" / "summary.csv").read_text() == (tmp_path / "first" / "summary.csv").read_text()
