"""The ONNX runtime's exported graphs kept between processes: the same maps as a fresh export, read back
instead of exported again, and a damaged file replaced."""
from __future__ import annotations

import numpy as np

from shared.domain.imaging.imageio import read_image
from shared.domain.model.segmenter import Segmenter


def test_a_cached_graph_gives_the_same_maps_and_is_reused(dsb_samples, tmp_path):
    image = read_image(dsb_samples[0].path)
    fresh = Segmenter(precision="fp32", runtime="onnx")
    first = Segmenter(precision="fp32", runtime="onnx", graph_cache=tmp_path)
    files = sorted(tmp_path.glob("*.onnx"))
    assert [f.name.split("-")[0] for f in files] == ["unet"]
    first.scale_factor(image)  # measuring a size builds the encoder's graph too
    files = sorted(tmp_path.glob("*.onnx"))
    assert [f.name.split("-")[0] for f in files] == ["style", "unet"]
    written = {f: f.stat().st_ino for f in files}

    again = Segmenter(precision="fp32", runtime="onnx", graph_cache=tmp_path)
    expected = fresh.predict(image)
    for segmenter in (first, again):
        got = segmenter.predict(image)
        for name in ("foreground", "boundary", "distance"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    assert {f: f.stat().st_ino for f in files} == written  # read back, not exported and replaced again
    assert not list(tmp_path.glob("*.partial"))


def test_a_damaged_graph_is_exported_again(dsb_samples, tmp_path):
    Segmenter(precision="fp32", runtime="onnx", graph_cache=tmp_path)
    (unet,) = tmp_path.glob("unet-*.onnx")
    unet.write_bytes(b"not a graph")
    image = read_image(dsb_samples[1].path)
    repaired = Segmenter(precision="fp32", runtime="onnx", graph_cache=tmp_path)
    assert unet.stat().st_size > 1000
    np.testing.assert_array_equal(repaired.segment(image), Segmenter(precision="fp32", runtime="onnx").segment(image))


def test_the_cache_keeps_the_most_recently_used_graphs(tmp_path):
    import os

    from shared.domain.model import runtime

    for i in range(5):
        (tmp_path / f"unet-{i}.onnx").write_bytes(b"x")
        os.utime(tmp_path / f"unet-{i}.onnx", (1000 + i, 1000 + i))
    runtime._prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["unet-2.onnx", "unet-3.onnx", "unet-4.onnx"]
