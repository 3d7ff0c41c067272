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
from shared.domain.model.weights_file import (CHECKPOINT_FORMAT, shipped_weights_path, sidecar_path, version_of,
                                               weights_digest)
from shared.domain.model.unet import UNet
from shared.domain.segmentation.postprocess import PostprocessSettings, connected_components


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


class TorchRunner:
    """The network, and its encoder once set, run by PyTorch over a normalised CxHxW image on `device`: padded to
    the stride, seen in views, averaged. The torch twin of onnx_inference.OnnxRunner, for GPUs and bfloat16."""

    def __init__(self, network: runtimes.TorchNetwork, stride: int, device: torch.device,
                 amp_dtype: torch.dtype | None):
        self.network, self.stride, self.style_network = network, stride, None
        self.device, self.amp_dtype = device, amp_dtype

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
    def forward(self, x: torch.Tensor, views: int) -> np.ndarray:
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

    def style(self, x: torch.Tensor) -> np.ndarray:
        with mixed_precision.autocast(self.device, self.amp_dtype):
            style = self.style_network(self._padded(x))
        return style[0].float().cpu().numpy()


class Segmenter(onnx_inference.Inference):
    """A trained network plus its post-processing. Thread-compatible, not thread-safe."""

    # Images and maps go through the pipeline (onnx_inference.Inference) as torch tensors, resized by torch.
    _array = staticmethod(torch.from_numpy)
    _resize = staticmethod(scale.resize_maps)

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
        network = self._compile(self.unet, kind="unet")
        # The encoder alone (style_network) is built when a size is first measured.
        self.runner = (onnx_inference.OnnxRunner(network, self.stride) if self.runtime == "onnx"
                       else TorchRunner(network, self.stride, self.device, self.amp_dtype))
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
            return runtimes.onnx_session(lambda: fuse(module), self.unet.config["in_channels"], maps, cache_file)
        return runtimes.TorchNetwork(fuse(module), self.device)

    @torch.inference_mode()
    def style(self, x: torch.Tensor) -> np.ndarray:
        """The encoder's summary of a normalised CxHxW image, which the size model reads (shared.domain.model.size)."""
        if self.runner.style_network is None:
            self.runner.style_network = self._compile(size.EncoderStyle(self.unet), kind="style", maps=False)
        return self.runner.style(x)

    def _forward(self, x: torch.Tensor, views: int | None = None) -> np.ndarray:
        return self.runner.forward(x, views or self.views)

    def segment_connected_components(self, image: np.ndarray) -> np.ndarray:
        p = self.predict(image)
        return connected_components(p.foreground, self.postprocess.foreground_threshold, self.postprocess.min_size)
