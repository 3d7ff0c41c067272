"""Segmenting with the ONNX runtime from a warm graph cache, in numpy, scipy and scikit-image only: no torch.

A Segmenter (shared.domain.model.segmenter) that runs its network with ONNX Runtime keeps its exported graphs in the
graph cache together with a record of everything else it segments with (shared.domain.model.graph_cache). A later
process asking for the same weights with the same settings on the same machine loads `OnnxSegmenter` from them
instead. Both segment through the code here: `Inference` (normalise, measure the nuclei's size, resize, tile,
post-process) and, for the ONNX runtime, `OnnxRunner` (pad, turn and mirror the views, run the graph, average);
only resizing differs (numpy's equivalent of torch's here), giving the same maps within float rounding and the
same labels. Importing torch costs more than the rest of a small command, so `shared.domain.model.loading` picks
this path when it can and the torch one (which fills the cache) otherwise.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.special import expit

from shared.domain.model import graph_cache, scale
from shared.domain.model.prediction import Prediction
from shared.domain.model.preprocess import normalize
from shared.domain.model.weights_file import shipped_weights_path, weights_digest
from shared.domain.model.size_model import WINDOW, SizeModel, central_window, is_blank
from shared.domain.segmentation.postprocess import PostprocessSettings, instances

OVERLAP = 64  # context read on each side of a tile (as shared.domain.model.segmenter.Segmenter's default)


def open_session(graph: bytes, threads: int):
    """An ONNX Runtime session on the CPU for `graph`, using `threads` threads within an operator."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads would keep the cores busy between calls, slowing the post-processing that follows.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def default_threads() -> int:
    """The threads PyTorch would use here by default (OMP_NUM_THREADS, else the CPUs this process may use)."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else len(os.sched_getaffinity(0))


def remember(folder: Path, weights: str, asked: tuple[str | None, str, str], record: dict) -> None:
    """Keep `record` (what OnnxSegmenter needs besides the graphs) for weights of digest `weights` loaded
    with `asked` = (device, precision, runtime) settings."""
    graph_cache.write(graph_cache.record_file(folder, weights, *asked), json.dumps(record).encode())


def tiled_maps(x, tile: int, overlap: int, forward) -> np.ndarray:
    """The 3xHxW maps of a CxHxW image (numpy or torch) from `forward` run on windows of at most `tile` pixels,
    each with `overlap` pixels of context on every side of the part kept."""
    _, height, width = x.shape
    if height <= tile and width <= tile:
        return forward(x)
    out = np.zeros((3, height, width), dtype=np.float32)
    step = tile - 2 * overlap
    for top in range(0, height, step):
        for left in range(0, width, step):
            t0, l0 = max(0, top - overlap), max(0, left - overlap)
            t1 = min(height, top + step + overlap)
            l1 = min(width, left + step + overlap)
            probs = forward(x[:, t0:t1, l0:l1])
            bottom, right = min(height, top + step), min(width, left + step)
            out[:, top:bottom, left:right] = probs[:, top - t0:bottom - t0, left - l0:right - l0]
    return out


def _bilinear(source: int, target: int, antialias: bool) -> sparse.csr_matrix:
    """target x source weights of torch's bilinear interpolation (align_corners=False), anti-aliased or not."""
    ratio = source / target
    rows, cols, weights = [], [], []
    for i in range(target):
        if antialias:
            support, inverse = (ratio, 1.0 / ratio) if ratio >= 1.0 else (1.0, 1.0)
            centre = ratio * (i + 0.5)
            first = max(int(centre - support + 0.5), 0)
            taps = np.arange(first, min(int(centre + support + 0.5), source))
            w = np.clip(1.0 - np.abs((taps - centre + 0.5) * inverse), 0.0, None)
            w = w / w.sum() if w.sum() else w
        else:
            position = max(ratio * (i + 0.5) - 0.5, 0.0)
            low = min(int(position), source - 1)
            high = low + 1 if low < source - 1 else low
            taps, w = np.array([low, high]), np.array([1.0 - (position - low), position - low])
        rows += [i] * len(taps)
        cols += taps.tolist()
        weights += w.tolist()
    return sparse.csr_matrix((np.asarray(weights, np.float32), (rows, cols)), shape=(target, source))


def resize_maps(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """scale.resize_maps in numpy: CxHxW float32 maps to `size`, bilinear, anti-aliased when shrinking."""
    channels, height, width = x.shape
    if (height, width) == tuple(size):
        return x
    shrinking = size[0] < height
    down = _bilinear(height, size[0], shrinking) @ x.astype(np.float32).transpose(1, 0, 2).reshape(height, -1)
    down = down.reshape(size[0], channels, width).transpose(1, 0, 2).reshape(-1, width)
    across = (_bilinear(width, size[1], shrinking) @ down.T).T
    return np.ascontiguousarray(across.reshape(channels, size[0], size[1]), dtype=np.float32)


class Inference:
    """What a segmenter does around its network, whichever library runs it: normalise, measure the nuclei's size,
    resize, run the network in tiles, post-process. A subclass gives `_forward` (the maps of a normalised CxHxW
    image averaged over views) and `style` (the encoder's summary the size model reads); one that works on torch
    tensors also `_array` and `_resize`. Needs `diameter`, `size_model`, `postprocess`, `tile`, `overlap`, `views`."""

    @staticmethod
    def _array(x: np.ndarray):
        """The normalised image in the form `_forward`, `style` and `_resize` take."""
        return x

    @staticmethod
    def _resize(x, size: tuple[int, int]):
        return resize_maps(x, size)

    def _forward(self, x, views: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def style(self, x) -> np.ndarray:
        raise NotImplementedError

    def predict(self, image: np.ndarray, diameter: float | None = None) -> Prediction:
        """`diameter`: the nuclei's median diameter in pixels when known, instead of measuring it."""
        x = self._array(normalize(image))
        if diameter:
            f, quick_look = scale.factor(diameter, self.diameter), None
        else:
            f, quick_look = self._measure(x)
        return quick_look if quick_look is not None else self._at_scale(x, f)

    def segment(self, image: np.ndarray, diameter: float | None = None) -> np.ndarray:
        p = self.predict(image, diameter)
        return p.labels if p.labels is not None else instances(p.foreground, p.boundary, p.distance, self.postprocess)

    def scale_factor(self, image: np.ndarray) -> float:
        """How much `predict` enlarges this image so that its nuclei come out at the trained diameter."""
        return self._measure(self._array(normalize(image)))[0]

    # --- one image in parts (shared.domain.segmentation.tiled): each part normalised and enlarged as the whole is ---

    def factor_for(self, image: np.ndarray, intensity: tuple[float, float], diameter: float | None = None) -> float:
        """The enlargement `predict` chooses for the whole of `image`, normalised only where it is measured (its
        central window) with the whole image's `intensity` range (preprocess.intensity_range)."""
        if diameter:
            return scale.factor(diameter, self.diameter)
        side = WINDOW if self.size_model is not None else min(WINDOW, self.tile)
        height, width = image.shape[:2]
        top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
        return self._measure(self._array(normalize(image[top:top + side, left:left + side], intensity)))[0]

    def predict_part(self, part: np.ndarray, intensity: tuple[float, float], f: float,
                     tile: int | None = None) -> Prediction:
        """The maps of a part of an image whose range is `intensity` and whose enlargement is `f` (factor_for),
        the network run in tiles of at most `tile` pixels (default: the segmenter's)."""
        return self._at_scale(self._array(normalize(part, intensity)), f, tile)

    def _at_scale(self, x, f: float, tile: int | None = None) -> Prediction:
        """The maps of a normalised image seen enlarged `f` times, at the image's own size."""
        if f == 1.0:
            return Prediction(*self._maps(x, tile))
        height, width = x.shape[1:]
        probs = self._maps(self._resize(x, scale.scaled_size(height, width, f)), tile)
        return Prediction(*np.asarray(self._resize(self._array(probs), (height, width))))

    def _measure(self, x) -> tuple[float, Prediction | None]:
        """The enlargement, from the median nucleus diameter the size model reads off the encoder; and, for
        weights exported before size models, from a quick segmentation (one view, at most the central
        WINDOW pixels square) of the image as it is, returned too when it already is the whole prediction."""
        if not self.diameter:
            return 1.0, None
        if self.size_model is not None:
            window = central_window(x)
            if is_blank(window):
                return 1.0, None
            return scale.factor(self.size_model.diameter(self.style(window)), self.diameter), None
        window = central_window(x, min(WINDOW, self.tile))
        probs = self._forward(window, views=1)
        labels = instances(*probs, self.postprocess)
        f = scale.factor(scale.median_diameter(labels), self.diameter, largest=scale.MAX_INFERENCE_FACTOR)
        complete = f == 1.0 and self.views == 1 and window.shape == x.shape
        return f, (Prediction(*probs, labels=labels) if complete else None)

    def _maps(self, x, tile: int | None = None) -> np.ndarray:
        return tiled_maps(x, tile or self.tile, self.overlap, self._forward)


class OnnxRunner:
    """The network's exported graph, and its encoder's once set, run by ONNX Runtime on a normalised CxHxW image
    (numpy, or a CPU tensor): padded to the network's stride, seen in views, averaged. The ONNX path of both
    OnnxSegmenter and the torch Segmenter (shared.domain.model.segmenter) with the onnx runtime."""

    def __init__(self, network, stride: int, style_network=None):
        self.network, self.stride, self.style_network = network, stride, style_network

    def padded(self, x) -> np.ndarray:
        """A batch of one, its sides padded to a multiple of the stride as the torch path pads (F.pad's reflect
        is numpy's reflect, its replicate numpy's edge)."""
        _, h, w = x.shape
        ph, pw = (-h) % self.stride, (-w) % self.stride
        batch = np.ascontiguousarray(x, dtype=np.float32)[None]
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "edge"
            batch = np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
        return batch

    def forward(self, x, views: int) -> np.ndarray:
        """The 3xHxW maps averaged over `views` views: views 2k and 2k+1 are the image turned k times by 90°, as
        is and mirrored (one batch of two)."""
        _, h, w = x.shape
        batch = self.padded(x)
        total = None
        for turns in range(max(1, views // 2)):
            turned = np.rot90(batch, turns, axes=(2, 3))
            if views > 1:
                turned = np.concatenate([turned, turned[..., ::-1]])
            logits = self.network.run(None, {"images": np.ascontiguousarray(turned)})[0]
            probs = expit(logits.astype(np.float32))
            if views > 1:
                probs = probs[:1] + probs[1:, ..., ::-1]
            probs = np.rot90(probs[0], -turns, axes=(1, 2))
            total = probs if total is None else total + probs
        return np.ascontiguousarray(total[:, :h, :w] / views, dtype=np.float32)

    def style(self, x) -> np.ndarray:
        return self.style_network.run(None, {"images": self.padded(x)})[0][0]


class OnnxSegmenter(Inference):
    """Segmenter's inference (predict, segment, scale_factor, factor_for, predict_part) from cached graphs."""

    runtime = "onnx"

    def __init__(self, record: dict, network, style_network, tile: int, views: int, overlap: int = OVERLAP):
        self.version = record["version"]
        self.stride = record["stride"]
        self.diameter = record["diameter"]
        self.size_model = SizeModel.from_dict(record["size_model"])
        self.postprocess = PostprocessSettings.from_dict(record["postprocess"])
        self.runner = OnnxRunner(network, self.stride, style_network)
        self.tile, self.views, self.overlap = tile, views, overlap

    def style(self, x: np.ndarray) -> np.ndarray:
        return self.runner.style(x)

    def _forward(self, x: np.ndarray, views: int | None = None) -> np.ndarray:
        return self.runner.forward(x, views or self.views)


def cached(weights: Path | None, tile: int, views: int, device: str | None, precision: str, runtime: str,
           folder: Path | None) -> OnnxSegmenter | None:
    """The OnnxSegmenter for these weights (default: the shipped ones) and settings when the graph cache in
    `folder` holds all it needs, else None (the torch Segmenter then loads, and fills the cache)."""
    if folder is None or runtime == "torch" or precision == "bf16" or (device or "auto") not in ("auto", "cpu"):
        return None
    try:
        raw = Path(weights or shipped_weights_path()).read_bytes()
    except OSError:
        return None
    digest = weights_digest(raw)
    record = graph_cache.read_record(graph_cache.record_file(folder, digest, device, precision, runtime))
    if record is None:
        return None
    unet = graph_cache.read(graph_cache.graph_file(folder, digest, "unet", True))
    needs_style = bool(record["diameter"]) and record["size_model"] is not None
    style = graph_cache.read(graph_cache.graph_file(folder, digest, "style", False)) if needs_style else None
    if unet is None or (needs_style and style is None):
        return None
    try:
        threads = default_threads()
        sessions = open_session(unet, threads), (open_session(style, threads) if style else None)
    except Exception:  # a damaged graph: the torch path exports it again
        return None
    return OnnxSegmenter(record, *sessions, tile=tile, views=views)
