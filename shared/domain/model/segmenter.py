"""Load weights once, segment many images: the one inference path for worker, CLI and trainer."""
from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse

from shared.domain.model.options import DEFAULT_TILE, DEFAULT_VIEWS, VIEWS
from shared.domain.model import graph_cache as graph_files
from shared.domain.model import onnx_inference, scale, size
from shared.domain.model import precision as mixed_precision
from shared.domain.model import runtime as runtimes
from shared.domain.model.prediction import Prediction
from shared.domain.model.preprocess import normalize
from shared.domain.model.weights_file import shipped_weights_path, sidecar_path, version_of, weights_digest
from shared.domain.model.unet import UNet
from shared.domain.segmentation.postprocess import PostprocessSettings, connected_components, instances

CHECKPOINT_FORMAT = "nucleus-unet/1"


def pick_device(name: str | None = None) -> torch.device:
    if name and name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def save_checkpoint(path: Path | io.BytesIO, model: UNet, name: str, extra: dict | None = None,
                    postprocess: PostprocessSettings = PostprocessSettings(), diameter: float | None = None) -> None:
    """`diameter`: the nucleus diameter (pixels) the network was trained to see; None: images as they come."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "name": name, "config": model.config, "state_dict": state,
                "postprocess": asdict(postprocess), "diameter": diameter, "extra": extra or {}}, path)


def export_weights(checkpoint: Path, target: Path, size_items: list | None = None,
                   progress=None) -> "size.SizeModel | None":
    """Write a checkpoint's (or exported weights') network in the compact shipped form: half precision, no
    optimiser state. With `size_items` (labelled images), also fit the size model inference measures nuclei with
    (shared.domain.model.size) for exactly these weights, if they are at least size.MIN_FIT_IMAGES; with fewer the
    weights measure nuclei on a quick segmentation. Without, an exported file keeps the one it has.
    Returns the size model the weights carry."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = half_precision(ckpt["state_dict"])
    extra = {k: v for k, v in ckpt.get("extra", {}).items() if k != "train_state"}
    extra["history"] = ckpt.get("extra", {}).get("train_state", {}).get("history", extra.get("history", []))
    exported = {"format": CHECKPOINT_FORMAT, "name": ckpt["name"], "config": ckpt["config"], "state_dict": state,
                "postprocess": asdict(PostprocessSettings()), "diameter": ckpt.get("diameter"), "extra": extra,
                "size": ckpt.get("size")}
    if size_items is not None:
        exported["size"] = None
        if exported["diameter"]:
            buffer = io.BytesIO()
            torch.save(exported, buffer)
            try:
                # float32 whatever the machine: the fit then does not depend on where a version was trained
                fitted = size.fit(Segmenter(buffer.getvalue(), precision="fp32").style, size_items, progress=progress)
                exported["size"] = fitted.to_dict()
            except size.TooFewImages:
                pass  # these weights measure nuclei on a quick segmentation
    torch.save(exported, target)
    write_version_sidecar(target)
    return size.SizeModel.from_dict(exported["size"])


def half_precision(state: dict) -> dict:
    """A state dict with its floating-point tensors in half precision: the compact form weights are committed in."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def write_version_sidecar(weights_path: Path) -> Path:
    """`<weights>.version` names the weights' version, so that processes without torch (the API) can
    register them in the model registry."""
    target = sidecar_path(Path(weights_path))
    target.write_text(weights_version(Path(weights_path).read_bytes()) + "\n")
    return target


def weights_version(raw: bytes) -> str:
    """The version string results will carry for these weights: the checkpoint's name + content hash."""
    checkpoint = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return version_of(raw, checkpoint.get("name", "model"))


def fine_tuning_config(raw: bytes) -> dict:
    """The TrainConfig fields that fine-tuning these weights must keep: the network's shape (`base`, `depth`) and
    the scale it was trained at (`diameter`, `scale_range`), so that it keeps seeing nuclei at the size it knows."""
    checkpoint = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    recipe = checkpoint.get("extra", {}).get("config", {})
    found = {"base": checkpoint["config"]["base"], "depth": checkpoint["config"]["depth"],
             "diameter": checkpoint.get("diameter")}
    if recipe.get("scale_range"):
        found["scale_range"] = tuple(recipe["scale_range"])
    return found


class Segmenter:
    """A trained network plus its post-processing. Thread-compatible, not thread-safe."""

    def __init__(self, weights: Path | str | bytes | None = None, device: str | None = None,
                 tile: int = DEFAULT_TILE, overlap: int = 64, precision: str = "auto", views: int = DEFAULT_VIEWS,
                 runtime: str = "auto", graph_cache: Path | None = None):
        """`graph_cache`: a folder where the ONNX runtime keeps its exported graphs between processes."""
        if views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}, not {views}")
        raw = weights if isinstance(weights, bytes) else Path(weights or shipped_weights_path()).read_bytes()
        checkpoint = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a nucleus weights file")
        self.device = pick_device(device)
        self.amp_dtype = mixed_precision.resolve(precision, self.device)
        model = UNet(**checkpoint["config"])
        model.load_state_dict(checkpoint["state_dict"])
        self.stride = model.stride
        self.runtime = runtimes.resolve(runtime, self.device, self.amp_dtype)
        self.unet = model.eval()
        self._graph_cache, self._weights_digest = graph_cache, weights_digest(raw)
        self.network = self._compile(self.unet, kind="unet")
        self._style_network = None  # the encoder alone, built when a size is first measured
        self.postprocess = PostprocessSettings.from_dict(checkpoint.get("postprocess", {}))
        self.diameter = checkpoint.get("diameter")
        self.size_model = size.SizeModel.from_dict(checkpoint.get("size"))
        self.version = version_of(raw, checkpoint.get("name", "model"))
        self.extra = checkpoint.get("extra", {})
        self.tile, self.overlap = tile, overlap
        self.views = views
        if self.runtime == "onnx" and graph_cache is not None:
            self._remember((device, precision, runtime))

    def _remember(self, asked: tuple[str | None, str, str]) -> None:
        """Keep beside the cached graphs what segmenting needs besides them, so that a later process asking
        the same (device, precision, runtime) segments from the cache without torch (shared.domain.model.onnx_inference)
        once the graphs it needs are there too (the encoder's is exported when a size is first measured)."""
        onnx_inference.remember(self._graph_cache, self._weights_digest, asked, {
            "version": self.version, "stride": self.stride, "diameter": self.diameter,
            "size_model": self.size_model.to_dict() if self.size_model else None,
            "postprocess": asdict(self.postprocess)})

    @classmethod
    def from_settings(cls, weights: Path | str | bytes | None, settings,
                      device: str | None = None) -> "Segmenter":
        """As the NUCLEUS_* settings ask: device, tile size, precision, runtime and test-time views."""
        return cls(weights, device=device or settings.device, tile=settings.tile_size, precision=settings.precision,
                   views=settings.test_time_views, runtime=settings.runtime, graph_cache=settings.graph_cache_folder)

    @classmethod
    def from_model(cls, model: UNet, name: str = "training", diameter: float | None = None) -> "Segmenter":
        buffer = io.BytesIO()
        save_checkpoint(buffer, model, name, diameter=diameter)
        return cls(buffer.getvalue(), device=str(next(model.parameters()).device))

    def _compile(self, module: torch.nn.Module, kind: str, maps: bool = True):
        # Inference only: folding each batch norm into its convolution saves about a fifth of the time.
        if self.runtime == "onnx":
            cache_file = None
            if self._graph_cache is not None:
                cache_file = graph_files.graph_file(self._graph_cache, self._weights_digest, kind, maps)
            return runtimes.OnnxNetwork.cached(lambda: fuse(module), self.unet.config["in_channels"], maps, cache_file)
        return runtimes.TorchNetwork(fuse(module), self.device)

    def predict(self, image: np.ndarray, diameter: float | None = None) -> Prediction:
        """`diameter`: the nuclei's median diameter in pixels when known, instead of measuring it."""
        x = torch.from_numpy(normalize(image))
        if diameter:
            f, quick_look = scale.factor(diameter, self.diameter), None
        else:
            f, quick_look = self._measure(x)
        if quick_look is not None:
            return quick_look
        return self._at_scale(x, f)

    def _at_scale(self, x: torch.Tensor, f: float, tile: int | None = None) -> Prediction:
        """The maps of a normalised image seen enlarged `f` times, at the image's own size."""
        if f == 1.0:
            return Prediction(*self._maps(x, tile))
        height, width = x.shape[1:]
        probs = self._maps(scale.resize_maps(x, scale.scaled_size(height, width, f)), tile)
        return Prediction(*scale.resize_maps(torch.from_numpy(probs), (height, width)).numpy())

    # --- one image in parts (shared.domain.segmentation.tiled): each part normalised and enlarged as the whole image would be ---

    def factor_for(self, image: np.ndarray, intensity: tuple[float, float], diameter: float | None = None) -> float:
        """The enlargement `predict` chooses for the whole of `image`, normalised only where it is measured (its
        central window) with the whole image's `intensity` range (preprocess.intensity_range)."""
        if diameter:
            return scale.factor(diameter, self.diameter)
        side = size.WINDOW if self.size_model is not None else min(size.WINDOW, self.tile)
        height, width = image.shape[:2]
        top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
        window = torch.from_numpy(normalize(image[top:top + side, left:left + side], intensity))
        return self._measure(window)[0]

    def predict_part(self, part: np.ndarray, intensity: tuple[float, float], f: float,
                     tile: int | None = None) -> Prediction:
        """The maps of a part of an image whose range is `intensity` and whose enlargement is `f` (factor_for),
        the network run in tiles of at most `tile` pixels (default: the segmenter's)."""
        return self._at_scale(torch.from_numpy(normalize(part, intensity)), f, tile)

    def scale_factor(self, image: np.ndarray) -> float:
        """How much `predict` enlarges this image so that its nuclei come out at the trained diameter."""
        return self._measure(torch.from_numpy(normalize(image)))[0]

    def _measure(self, x: torch.Tensor) -> tuple[float, Prediction | None]:
        """The enlargement, from the median nucleus diameter the size model reads off the encoder; and, for
        weights exported before size models, from a quick segmentation (one view, at most the central
        size.WINDOW pixels square) of the image as it is, returned too when it already is the whole prediction."""
        if not self.diameter:
            return 1.0, None
        if self.size_model is not None:
            window = size.central_window(x)
            if size.is_blank(window):
                return 1.0, None
            return scale.factor(self.size_model.diameter(self.style(window)), self.diameter), None
        window = size.central_window(x, min(size.WINDOW, self.tile))
        probs = self._forward(window, views=1)
        labels = instances(*probs, self.postprocess)
        f = scale.factor(scale.median_diameter(labels), self.diameter, largest=scale.MAX_INFERENCE_FACTOR)
        complete = f == 1.0 and self.views == 1 and window.shape == x.shape
        return f, (Prediction(*probs, labels=labels) if complete else None)

    @torch.inference_mode()
    def style(self, x: torch.Tensor) -> np.ndarray:
        """The encoder's summary of a normalised CxHxW image, which the size model reads (shared.domain.model.size)."""
        if self._style_network is None:
            self._style_network = self._compile(size.EncoderStyle(self.unet), kind="style", maps=False)
        with mixed_precision.autocast(self.device, self.amp_dtype):
            style = self._style_network(self._padded(x))
        return style[0].float().cpu().numpy()

    def _maps(self, x: torch.Tensor, tile: int | None = None) -> np.ndarray:
        return onnx_inference.tiled_maps(x, tile or self.tile, self.overlap, self._forward)

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """A CxHxW image as a batch of one on the device, its sides padded to a multiple of the network's stride."""
        _, h, w = x.shape
        ph, pw = (-h) % self.stride, (-w) % self.stride
        batch = x[None]
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            batch = F.pad(batch, (0, pw, 0, ph), mode=mode)
        return batch.to(self.device)

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, views: int | None = None) -> np.ndarray:
        views = views or self.views
        _, h, w = x.shape
        batch = self._padded(x)
        total = None
        # Views 2k and 2k+1 are the image turned k times by 90°, then as is and mirrored: one batch of two.
        for turns in range(max(1, views // 2)):
            turned = torch.rot90(batch, turns, dims=(2, 3))
            if views > 1:
                turned = torch.cat([turned, turned.flip(3)])
            with mixed_precision.autocast(self.device, self.amp_dtype):
                logits = self.network(turned)
            probs = torch.sigmoid(logits.float())
            if views > 1:
                probs = probs[:1] + probs[1:].flip(3)
            probs = torch.rot90(probs[0], -turns, dims=(1, 2))
            total = probs if total is None else total + probs
        return (total[:, :h, :w] / views).cpu().numpy()

    def segment(self, image: np.ndarray, diameter: float | None = None) -> np.ndarray:
        p = self.predict(image, diameter)
        return p.labels if p.labels is not None else instances(p.foreground, p.boundary, p.distance, self.postprocess)

    def segment_connected_components(self, image: np.ndarray) -> np.ndarray:
        p = self.predict(image)
        return connected_components(p.foreground, self.postprocess.foreground_threshold, self.postprocess.min_size)
