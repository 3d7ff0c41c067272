"""Training the U-Net: data in memory, microscopy augmentation, checkpoints that resume.

`nucleus train` and the trainer service both call `train()`; the same code runs on CPU and GPU.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from shared.domain.training import augmentation
from shared.domain.training.averaging import WeightAverage
from shared.domain.datasets.labelled import LabelledImage
from shared.domain.model import precision, scale
from shared.domain.model.preprocess import normalize
from shared.domain.model.segmenter import Segmenter, half_precision, pick_device, save_checkpoint
from shared.domain.model.targets import contact_zone, instance_targets
from shared.domain.model.unet import UNet
from shared.domain.model.widen import widen

log = logging.getLogger(__name__)

# Steps of linear warm-up after resuming from a compact checkpoint, whose fresh Adam moments would overshoot.
REWARM_STEPS = 100


@dataclass
class TrainConfig:
    """The defaults are the shipped model's recipe (shared/weights/MODEL_CARD.md)."""
    steps: int = 44500
    batch: int = 8
    crop: int = 224
    lr: float = 2e-3
    # Warm restarts: at each (step, peak learning rate) a new cosine cycle begins; steps past `steps` are ignored.
    restarts: tuple[tuple[int, float], ...] = ((5000, 6e-4), (10500, 4e-4), (16500, 4e-4), (26500, 3e-4))
    weight_decay: float = 1e-4
    # Extra loss weight on pixels where nuclei touch (shared.domain.model.targets.contact_zone): merges of touching
    # nuclei are the commonest counting error.
    contact_weight: float = 4.0
    # Few stained images exist; crops are drawn from them this many times more often than from a fluorescence image.
    kind_weights: tuple[tuple[str, float], ...] = (("fluorescence", 1.0), ("stained-tissue", 2.0), ("stained", 2.0),
                                                   ("brightfield", 3.0))
    base: int = 16
    depth: int = 4
    # At each (step, width) the network is widened to that many channels at full resolution, computing what it
    # computed (shared.domain.model.widen), with fresh optimiser moments (and a short warm-up for them); steps past
    # `steps` are ignored. The first cycles thus run at the narrow network's cost.
    widen: tuple[tuple[int, int], ...] = ()
    # Each training image is resized so that its median nucleus is `diameter` pixels across
    # (shared.domain.model.scale; None: images as they come), then crops are zoomed at random within `scale_range`.
    # The default was the best target on training images segmented across inference's range of factors
    # (shared/weights/MODEL_CARD.md, "Nucleus size").
    diameter: float | None = 22.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    checkpoint_every: int = 100
    eval_every: int = 500
    eval_images: int = 0  # 0 = the whole validation set
    seed: int = 0
    threads: int = 0  # 0 = torch's default
    device: str = "auto"
    precision: str = "auto"  # "auto": bfloat16 where the hardware has the instructions (shared.domain.model.precision)
    # From this step on (0: never), the weights are averaged every `checkpoint_every` steps and model.pt is their
    # mean (shared.domain.training.averaging), with batch-norm statistics measured again on `bn_batches` training
    # batches.
    average_from: int = 0
    bn_batches: int = 100
    # Parts of the network left as they are (one of FREEZE_CHOICES): "encoder" trains only the decoder and head,
    # with the encoder's batch-norm statistics kept too.
    freeze: str = "none"
    name: str = "nucleus-dsb2018"
    # Transforms for images unlike the training set's (shared.domain.training.augmentation.TRANSFORMS), each with the
    # probability a crop gets it: stain jitter, fluorescence rendered as stained, lower magnification, noise, uneven
    # background.
    robust_augment: tuple[tuple[str, float], ...] = ()


FREEZE_CHOICES = ("none", "encoder")


@dataclass
class Sample:
    image: np.ndarray    # 3xHxW float16, normalised
    targets: np.ndarray  # 4xHxW float16: the network's three outputs (unet.OUTPUTS), then the contact zone
    kind: str
    weight: float = 1.0  # relative sampling weight on top of the per-kind weight


def training_targets(labels: np.ndarray) -> np.ndarray:
    return np.concatenate([instance_targets(labels), contact_zone(labels)[None]]).astype(np.float16)


def prepare(items: Iterable[LabelledImage], weight: float = 1.0, diameter: float | None = None) -> list[Sample]:
    return [_prepare_one(it, weight, diameter) for it in items]


def _prepare_one(item: LabelledImage, weight: float, diameter: float | None) -> Sample:
    image, labels = torch.from_numpy(normalize(item.image)), item.labels
    f = scale.factor(scale.median_diameter(labels), diameter)
    if f != 1.0:
        size = scale.scaled_size(*labels.shape, f)
        image, labels = scale.resize_maps(image, size), scale.resize_labels(labels, size)
    return Sample(image.numpy().astype(np.float16), training_targets(labels), item.kind, weight)


def _random_crop(sample: Sample, size: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    _, h, w = sample.image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    image, targets = sample.image, sample.targets
    if ph or pw:
        pad = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image, targets = np.pad(image, pad, mode="reflect"), np.pad(targets, pad, mode="reflect")
        h, w = image.shape[1:]
    top, left = rng.randint(0, h - size), rng.randint(0, w - size)
    return image[:, top:top + size, left:left + size], targets[:, top:top + size, left:left + size]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2.5 * sigma)))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[0]
    x = F.conv2d(F.pad(x[None], (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                 groups=c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x[0]


def augment(sample: Sample, cfg: TrainConfig, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """One training crop: scale, flips, 90° turns, intensity, contrast, blur, noise, inversion, colour."""
    scale = math.exp(rng.uniform(math.log(cfg.scale_range[0]), math.log(cfg.scale_range[1])))
    source = max(16, int(round(cfg.crop / scale)))
    image, targets = _random_crop(sample, source, rng)
    x = torch.from_numpy(image.astype(np.float32))
    y = torch.from_numpy(targets.astype(np.float32))
    if source != cfg.crop:
        x = F.interpolate(x[None], size=(cfg.crop, cfg.crop), mode="bilinear", align_corners=False)[0]
        y = F.interpolate(y[None], size=(cfg.crop, cfg.crop), mode="bilinear", align_corners=False)[0]
        y[0] = (y[0] > 0.5).float()
        y[1] = (y[1] > (0.5 if scale > 1 else 0.3)).float() * y[0]
        y[2] = y[2] * y[0]
    k = rng.randint(0, 3)
    if k:
        x, y = torch.rot90(x, k, (1, 2)), torch.rot90(y, k, (1, 2))
    if rng.random() < 0.5:
        x, y = x.flip(2), y.flip(2)
    if cfg.robust_augment:
        x = augmentation.apply(x, sample.kind, dict(cfg.robust_augment), rng)
    # intensity
    if rng.random() < 0.3:
        x = x[torch.randperm(3, generator=torch.Generator().manual_seed(rng.randint(0, 2**31)))]
    if rng.random() < 0.2:
        x = x.mean(0, keepdim=True).expand(3, -1, -1).clone()
    if rng.random() < 0.25:
        x = 1.0 - x
    x = x.clamp(-0.5, 2.0)
    if rng.random() < 0.5:
        gamma = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
        x = x.clamp(min=0) ** gamma
    x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15)
    if rng.random() < 0.2:
        x = _gaussian_blur(x, rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        x = x + torch.randn_like(x) * rng.uniform(0.0, 0.08)
    return x, y


def batches(samples: list[Sample], cfg: TrainConfig, rng: random.Random):
    by_kind = dict(cfg.kind_weights)
    weights = [by_kind.get(s.kind, 1.0) * s.weight for s in samples]
    while True:
        chosen = rng.choices(samples, weights=weights, k=cfg.batch)
        pairs = [augment(s, cfg, rng) for s in chosen]
        yield torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def loss_fn(logits: torch.Tensor, target: torch.Tensor, contact_weight: float = 0.0) -> torch.Tensor:
    """Foreground BCE + Dice, rim BCE, distance BCE; the per-pixel terms weigh the contact zone more."""
    fg, bd, dist = target[:, 0], target[:, 1], target[:, 2]
    weight = 1.0 + contact_weight * target[:, 3] if contact_weight and target.shape[1] > 3 else None
    fg_logit = logits[:, 0]
    bce_fg = F.binary_cross_entropy_with_logits(fg_logit, fg, weight=weight)
    p = torch.sigmoid(fg_logit)
    dice = 1 - (2 * (p * fg).sum() + 1) / (p.sum() + fg.sum() + 1)
    bce_bd = F.binary_cross_entropy_with_logits(logits[:, 1], bd, weight=weight,
                                                pos_weight=torch.tensor(3.0, device=logits.device))
    bce_dist = F.binary_cross_entropy_with_logits(logits[:, 2], dist, weight=weight)
    return bce_fg + dice + bce_bd + 2 * bce_dist


def evaluate_model(model: UNet, items: list[LabelledImage], diameter: float | None = None) -> dict:
    from shared.domain.accuracy import score_image, summarize

    was_training = model.training
    segmenter = Segmenter.from_model(model, diameter=diameter)
    scores = [score_image(it.name, it.kind, it.labels, segmenter.segment(it.image)) for it in items]
    model.train(was_training)
    return summarize(scores)


@dataclass
class TrainState:
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak; each warm restart begins a new such cycle."""
    cycles = [(0, cfg.lr)] + sorted((at, peak) for at, peak in cfg.restarts if 0 < at < cfg.steps)
    ends = [at for at, _ in cycles[1:]] + [cfg.steps]
    for (start, peak), end in zip(cycles, ends):
        if step < end or end == cfg.steps:
            return _cosine(step - start, end - start, peak)


def _cosine(step: int, length: int, peak: float) -> float:
    warmup = min(500, length // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, length - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class _Run:
    """What train() carries from one step to the next: the network (replaced when it is widened), its optimiser,
    the state saved in checkpoints, and the running weight average."""
    cfg: TrainConfig
    out: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    model: UNet
    state: TrainState = field(default_factory=TrainState)
    optimizer: torch.optim.Optimizer | None = None
    average: WeightAverage | None = None
    rewarm_from: int | None = None  # the step the learning rate last began a re-warm-up at
    losses: list[float] = field(default_factory=list)
    started: float = 0.0


def train(train_items: list[LabelledImage] | list[Sample], val_items: list[LabelledImage], out: Path, cfg: TrainConfig,
          init_weights: Path | bytes | None = None, progress: Callable[[int, int, dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict:
    """Train (or resume, if `out/last.pt` exists) and return the final state as a dict.

    `train_items` are labelled images, or Samples already prepared (to give some a larger sampling weight).

    `out/` receives last.pt (resume point), best.pt (best validation DSB score so far), model.pt
    (the final weights), history.json and curves.png.
    """
    if cfg.average_from and any(cfg.average_from < at < cfg.steps for at, _ in cfg.widen):
        raise ValueError("weights can be averaged only from the last widening on (--average-from)")
    out.mkdir(parents=True, exist_ok=True)
    run = _start(out, cfg, init_weights)
    samples = [it if isinstance(it, Sample) else prepare([it], diameter=cfg.diameter)[0] for it in train_items]
    validation = val_items if not cfg.eval_images else val_items[: cfg.eval_images]
    stream = batches(samples, cfg, random.Random(cfg.seed * 100003 + run.state.step))
    run.started = time.time()
    while run.state.step < cfg.steps and not (should_stop and should_stop()):
        _widen_if_scheduled(run)
        _step(run, next(stream))
        evaluated = _evaluate_if_due(run, validation)
        _add_to_average_if_due(run)
        if run.state.step % cfg.checkpoint_every == 0 or evaluated:
            _checkpoint(run, out / "last.pt", with_optimizer=True)
        if progress:
            progress(run.state.step, cfg.steps, {"loss": float(np.mean(run.losses[-50:]))})
    _checkpoint(run, out / "last.pt", with_optimizer=True)
    if run.average is not None and run.average.count and run.state.step >= cfg.steps:
        _finish_with_average(run, stream, validation)
    _checkpoint(run, out / "model.pt", with_optimizer=False)
    return asdict(run.state)


def _start(out: Path, cfg: TrainConfig, init_weights: Path | bytes | None) -> _Run:
    """The network, optimiser and state to train from: out/last.pt's if it exists, else `init_weights` (widened to
    `cfg.base`) or a new network."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    amp_dtype = precision.resolve(cfg.precision, device)
    log.info("training on %s in %s", device, "bfloat16 mixed precision" if amp_dtype else "float32")
    torch.manual_seed(cfg.seed)
    resume = out / "last.pt"
    ckpt = torch.load(resume, map_location="cpu", weights_only=False) if resume.exists() else None
    if ckpt is not None:
        run = _resumed(ckpt, out, cfg, device, amp_dtype)
    else:
        model = initial_model(init_weights, cfg) if init_weights is not None else UNet(base=cfg.base, depth=cfg.depth)
        run = _Run(cfg, out, device, amp_dtype, model)
    _freeze(run.model, cfg.freeze)
    run.optimizer = _optimizer(run.model, cfg)
    if ckpt is not None and "optimizer" in ckpt:
        run.optimizer.load_state_dict(ckpt["optimizer"])
    run.model.to(device, memory_format=torch.channels_last).train()
    _move_optimizer_state(run.optimizer, device)
    return run


def _resumed(ckpt: dict, out: Path, cfg: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None) -> _Run:
    model = UNet(**ckpt["config"])  # narrower than cfg.base if it stopped before a widening
    model.load_state_dict(_float32(ckpt["state_dict"]))
    run = _Run(cfg, out, device, amp_dtype, model)
    if "average" in ckpt:
        run.average = WeightAverage(model)
        run.average.load_state_dict(ckpt["average"])
    if "optimizer" not in ckpt:  # a compact checkpoint (weights only): fresh Adam moments need a short warm-up
        run.rewarm_from = ckpt["extra"]["train_state"]["step"]
    run.state = TrainState(**ckpt["extra"]["train_state"])
    log.info("resuming at step %d%s", run.state.step, "" if run.rewarm_from is None else " (weights only)")
    return run


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Put the moments a checkpoint restored (on the CPU) beside the parameters; Adam's step counts stay on the
    CPU, where it keeps them."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st:
                for k, v in st.items():
                    if torch.is_tensor(v) and k != "step":
                        st[k] = v.to(device)


def _widen_if_scheduled(run: _Run) -> None:
    """Widen the network if `cfg.widen` says so at this step; a new optimiser, whose moments re-warm."""
    cfg, step = run.cfg, run.state.step
    width = dict(cfg.widen).get(step, 0)
    if width <= run.model.config["base"]:
        return
    log.info("widening the network from %d to %d channels at step %d", run.model.config["base"], width, step)
    run.model = widen(run.model.cpu(), width, seed=cfg.seed + step)
    _freeze(run.model, cfg.freeze)
    run.model.to(run.device, memory_format=torch.channels_last).train()
    run.optimizer = _optimizer(run.model, cfg)
    run.rewarm_from = step


def _step(run: _Run, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One optimiser step on `batch` at the scheduled learning rate."""
    cfg = run.cfg
    _keep_frozen_statistics(run.model, cfg.freeze)  # evaluation switched every module back to training mode
    x = batch[0].to(run.device).contiguous(memory_format=torch.channels_last)
    y = batch[1].to(run.device)
    for group in run.optimizer.param_groups:
        group["lr"] = _current_learning_rate(run)
    with precision.autocast(run.device, run.amp_dtype):
        logits = run.model(x)
    loss = loss_fn(logits.float(), y, cfg.contact_weight)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.state.step += 1
    run.losses.append(loss.item())


def _current_learning_rate(run: _Run) -> float:
    """The schedule's rate, scaled down during the REWARM_STEPS after fresh optimiser moments."""
    step, lr = run.state.step, learning_rate(run.state.step, run.cfg)
    if run.rewarm_from is not None and step - run.rewarm_from < REWARM_STEPS:
        lr *= (step - run.rewarm_from + 1) / REWARM_STEPS
    return lr


def _evaluate_if_due(run: _Run, validation: list[LabelledImage]) -> dict | None:
    """Every `eval_every` steps and at the last: score the network, record it in the history (with curves.png) and
    keep best.pt. Returns the record, or None when no evaluation was due."""
    cfg, state = run.cfg, run.state
    if state.step % cfg.eval_every != 0 and state.step != cfg.steps:
        return None
    metrics = evaluate_model(run.model, validation, cfg.diameter) if validation else {}
    record = {"step": state.step, "loss": float(np.mean(run.losses[-cfg.eval_every:])),
              "lr": learning_rate(state.step, cfg), "seconds": round(time.time() - run.started, 1), **metrics}
    state.history.append(record)
    log.info("eval %s", json.dumps(record))
    if metrics and (state.best is None or metrics["dsb_score"] > state.best.get("dsb_score", -1)):
        state.best = record
        _checkpoint(run, run.out / "best.pt", with_optimizer=False)
    (run.out / "history.json").write_text(json.dumps(state.history, indent=1))
    plot_curves(state.history, run.out / "curves.png")
    return record


def _add_to_average_if_due(run: _Run) -> None:
    cfg, step = run.cfg, run.state.step
    if cfg.average_from and step >= cfg.average_from and step % cfg.checkpoint_every == 0:
        if run.average is None:
            run.average = WeightAverage(run.model)
        run.average.add(run.model)


def _finish_with_average(run: _Run, stream, validation: list[LabelledImage]) -> None:
    """Put the averaged weights into the network and record their validation scores in the history."""
    _average_into(run.model, run.average, stream, run.cfg, run.device, run.amp_dtype)
    metrics = evaluate_model(run.model, validation, run.cfg.diameter) if validation else {}
    record = {"step": run.state.step, "averaged": run.average.count, **metrics}
    run.state.history.append(record)
    log.info("eval %s", json.dumps(record))
    (run.out / "history.json").write_text(json.dumps(run.state.history, indent=1))


def _checkpoint(run: _Run, path: Path, with_optimizer: bool) -> None:
    """The network with the training state; a resume point (`with_optimizer`) also holds the optimiser's moments
    and the weight average."""
    extra = {"train_state": asdict(run.state), "config": asdict(run.cfg)}
    save_checkpoint(path, run.model, run.cfg.name, extra=extra, diameter=run.cfg.diameter)
    if with_optimizer:
        ckpt = torch.load(path, weights_only=False)
        ckpt["optimizer"] = run.optimizer.state_dict()
        if run.average is not None:
            ckpt["average"] = run.average.state_dict()
        torch.save(ckpt, path)


def _frozen_part(model: UNet, freeze: str) -> torch.nn.Module | None:
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, not {freeze!r}")
    return model.down if freeze == "encoder" else None


def _freeze(model: UNet, freeze: str) -> None:
    part = _frozen_part(model, freeze)
    if part is not None:
        part.requires_grad_(False)


def _keep_frozen_statistics(model: UNet, freeze: str) -> None:
    part = _frozen_part(model, freeze)
    if part is not None:
        part.eval()


def _optimizer(model: UNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                             weight_decay=cfg.weight_decay)


def initial_model(weights: Path | bytes, cfg: TrainConfig) -> UNet:
    """The network fine-tuning starts from: `weights`, widened to `cfg.base` if they are narrower
    (shared.domain.model.widen), so that a wider network need not learn from scratch."""
    import io
    raw = weights if isinstance(weights, bytes) else Path(weights).read_bytes()
    ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    model = UNet(**ckpt["config"])
    model.load_state_dict(_float32(ckpt["state_dict"]))
    if model.config["depth"] != cfg.depth or model.config["base"] > cfg.base:
        raise ValueError(f"weights of a U-Net {model.config} cannot start one of width {cfg.base}, depth {cfg.depth}")
    if model.config["base"] < cfg.base:
        log.info("widening the initial weights from %d to %d channels", model.config["base"], cfg.base)
        model = widen(model, cfg.base, seed=cfg.seed)
    return model


def _float32(state: dict) -> dict:
    """A state dict whose half-precision tensors (exported weights) are float32 again, for training."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _average_into(model: UNet, average: WeightAverage, stream, cfg: TrainConfig, device, amp_dtype) -> None:
    log.info("averaging %d snapshots from step %d; measuring batch-norm statistics on %d batches",
             average.count, cfg.average_from, cfg.bn_batches)
    inputs = (x.to(device).contiguous(memory_format=torch.channels_last) for x, _ in stream)
    with precision.autocast(device, amp_dtype):
        average.apply_to(model, inputs, cfg.bn_batches)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [h for h in history if "loss" in h]  # not the averaged weights' final record
    if not history:
        return
    steps = [h["step"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(steps, [h["loss"] for h in history], marker="o")
    ax1.set_xlabel("step"), ax1.set_ylabel("training loss"), ax1.set_yscale("log")
    for key, label in (("pixel_iou", "pixel IoU"), ("ap50", "AP@0.5"), ("dsb_score", "DSB score")):
        if key in history[0]:
            ax2.plot(steps, [h[key] for h in history], marker="o", label=label)
    ax2.set_xlabel("step"), ax2.set_ylabel("validation"), ax2.set_ylim(0, 1)
    if ax2.get_lines():
        ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def compact_checkpoint(source: Path, target: Path) -> None:
    """A small resume point to commit: half-precision weights and the training state, no optimiser moments.
    `train()` resumes from it (with a short learning-rate re-warm-up) when it is placed at OUT/last.pt."""
    ckpt = torch.load(source, map_location="cpu", weights_only=False)
    ckpt.pop("optimizer", None)
    ckpt["state_dict"] = half_precision(ckpt["state_dict"])
    torch.save(ckpt, target)


# Images the new version's size model is fitted on (shared.domain.model.size), five encoder passes each: as many
# as fit as well as the whole DSB2018 training set, in about half its time (bench/README.md, "Figures behind
# defaults").
SIZE_FIT_IMAGES = 300


@dataclass
class FineTuned:
    weights: bytes  # exported (shipped form), with the size model fitted for them when there were enough images
    steps: int
    size_model_images: int
    seconds: dict[str, float]  # wall time of each part: prepare, train, export (with the size model's fit)


def user_sample_weight(base_images: int, user_images: int, share: float) -> float:
    """The sampling weight of each user-labelled image that makes user labels `share` of what is sampled,
    whatever their number."""
    if not base_images or share >= 1:
        return 1.0
    return (share / (1 - share)) * base_images / max(1, user_images)


def fine_tuning_train_config(parent_raw: bytes, settings, steps: int, seed: int) -> TrainConfig:
    """The recipe a training run fine-tunes a version with: the budget, rate and frozen part come from the
    settings (NUCLEUS_TRAINING_*), the network's shape and scale from the parent (fine_tuning_config)."""
    from shared.domain.model.segmenter import fine_tuning_config

    return TrainConfig(steps=steps, batch=settings.training_batch, crop=settings.training_crop,
                       lr=settings.training_lr, restarts=(), eval_every=10 * steps + 1,
                       checkpoint_every=10 * steps + 1, device=settings.device, freeze=settings.training_freeze,
                       name="nucleus-ft", seed=seed, **fine_tuning_config(parent_raw))


def fine_tune(parent_raw: bytes, base_train: list[LabelledImage], user_train: list[LabelledImage], settings,
              steps: int, seed: int = 0, progress: Callable[[int, int, dict], None] | None = None) -> FineTuned:
    """Fine-tune `parent_raw` on the base set plus user labels (user labels drawn `settings.training_user_share`
    of the time) and export the result with its size model: what a training run does, and what
    bench/adaptation.py measures."""
    import tempfile

    from shared.domain.model.segmenter import export_weights

    if not base_train and not user_train:
        raise ValueError("nothing to train on: no base images and no user labels")
    cfg = fine_tuning_train_config(parent_raw, settings, steps, seed)
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return round(clock[-1] - clock[-2], 1)

    samples = prepare(base_train, diameter=cfg.diameter)
    if user_train:
        share = settings.training_user_share if base_train else 1.0
        samples += prepare(user_train, weight=user_sample_weight(len(base_train), len(user_train), share),
                           diameter=cfg.diameter)
    labelled = base_train + user_train
    size_items = random.Random(0).sample(labelled, min(SIZE_FIT_IMAGES, len(labelled)))
    seconds = {"prepare": lap()}
    with tempfile.TemporaryDirectory(prefix="nucleus-train-") as tmp:
        out = Path(tmp)
        train(samples, [], out, cfg, init_weights=parent_raw, progress=progress)
        seconds["train"] = lap()
        size_model = export_weights(out / "model.pt", out / "export.pt", size_items=size_items)
        raw = (out / "export.pt").read_bytes()
        seconds["export"] = lap()
    return FineTuned(raw, steps, len(size_items) if size_model else 0, seconds)
