"""`nucleus train`: train the segmentation model on a labelled set, resumably."""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import click

from shared.domain.training.augmentation import TRANSFORMS
from shared.domain.model.options import PRECISIONS
from shared.domain.training.loop import TrainConfig

DEFAULTS = TrainConfig()


def step_options(at: str, event: str, value: str, value_type: type, value_help: str, recipe: tuple):
    """Two repeated options that together give (step, value) pairs, such as the recipe's warm restarts."""
    def listed(index: int) -> str:
        return ", ".join(str(pair[index]) for pair in recipe) or "none"

    def decorate(command):
        command = click.option(value, type=value_type, multiple=True,
                               help=f"{value_help}, in the order of {at} (default: {listed(1)}).")(command)
        return click.option(at, type=int, multiple=True,
                            help=f"Step at which {event}; repeat for several (default: {listed(0)}; with --init: "
                                 "none). 0: none.")(command)
    return decorate


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Labelled set (default: dsb2018-stage1-train under $NUCLEUS_DATA_ROOT, else ../shared/data; "
                   "its fixed validation split is held out).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/dsb2018"), show_default=True,
              help="Run folder: last.pt (resume point), best.pt, model.pt, history.json, curves.png, train.log.")
@click.option("--steps", type=int, default=DEFAULTS.steps, show_default=True)
@click.option("--batch", type=int, default=DEFAULTS.batch, show_default=True)
@click.option("--crop", type=int, default=DEFAULTS.crop, show_default=True)
@click.option("--lr", type=float, default=DEFAULTS.lr, show_default=True)
@step_options("--restart-at", "a new cosine cycle starts", "--restart-lr", float,
              "Peak learning rate of each new cycle", DEFAULTS.restarts)
@click.option("--contact-weight", type=float, default=DEFAULTS.contact_weight, show_default=True,
              help="Extra loss weight where nuclei touch (0: none).")
@click.option("--kind-weight", type=(click.Choice([kind for kind, _ in DEFAULTS.kind_weights]), float),
              multiple=True, help="How often crops are drawn from images of a type (the recipe: "
                   f"{', '.join(f'{k} {w:g}' for k, w in DEFAULTS.kind_weights)}); repeat for several types.")
@click.option("--augment", type=(click.Choice(TRANSFORMS), click.FloatRange(0, 1)), multiple=True,
              help="A robustness transform and the share of crops it is applied to (shared.domain.training.augmentation), on top of "
                   "the recipe's; repeat for several, e.g. --augment stain 0.5 --augment noise 0.2 (default: none).")
@click.option("--diameter", type=float, default=DEFAULTS.diameter, show_default=True,
              help="Resize each image so its median nucleus is this many pixels across (0: as they come).")
@click.option("--scale-range", type=(float, float), default=DEFAULTS.scale_range, show_default=True,
              help="Random zoom of training crops, smallest and largest factor.")
@click.option("--base", type=int, default=DEFAULTS.base, show_default=True,
              help="U-Net width (channels at full resolution) at the start; wider than --init's weights widens them.")
@step_options("--widen-at", "the network is widened, keeping what it computes", "--widen-to", int,
              "Width after each widening", DEFAULTS.widen)
@click.option("--average-from", type=int, default=DEFAULTS.average_from, show_default=True,
              help="Average the weights every --checkpoint-every steps from this step on and make model.pt their "
                   "mean (stochastic weight averaging; 0: off).")
@click.option("--eval-every", type=int, default=DEFAULTS.eval_every, show_default=True)
@click.option("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every, show_default=True)
@click.option("--eval-images", type=int, default=0, help="Validate on only the first N validation images (0: all).")
@click.option("--limit", type=int, default=0, help="Train on only the first N training images (for smoke runs).")
@click.option("--init", "init_weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Start from these weights (fine-tuning) instead of random initialisation.")
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULTS.precision, show_default=True,
              help="auto: bfloat16 mixed precision where the CPU or GPU has the instructions (faster there), "
                   "else float32.")
@click.option("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default, one per core).")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--resume-from", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A compact resume point (see --save-compact) to continue from when OUT has none.")
@click.option("--save-compact", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a small resume point here (half-precision weights + state, no optimiser), to commit.")
@click.option("--export", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the final weights here in the compact shipped format (half precision).")
def train(data, out, steps, batch, crop, lr, restart_at, restart_lr, contact_weight, kind_weight, augment, diameter, scale_range,
          base, widen_at, widen_to, average_from, eval_every, checkpoint_every, eval_images, limit, init_weights,
          device, precision, threads, seed, resume_from, save_compact, export):
    """Train; rerun the same command to resume from OUT/last.pt."""
    from tqdm import tqdm

    from shared.domain.datasets.labelled import default_dsb_dir, iter_labelled, list_names, validation_names
    from shared.domain.model.segmenter import export_weights
    from shared.domain.model.size import MIN_FIT_IMAGES
    from shared.domain.training.loop import compact_checkpoint, train as run

    fine_tuning = init_weights is not None
    restarts = _schedule(restart_at, restart_lr, DEFAULTS.restarts, fine_tuning, "--restart-at", "--restart-lr")
    widenings = _schedule(widen_at, widen_to, DEFAULTS.widen, fine_tuning, "--widen-at", "--widen-to")
    out.mkdir(parents=True, exist_ok=True)
    if resume_from and not (out / "last.pt").exists():
        shutil.copy(resume_from, out / "last.pt")
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)

    root = data or default_dsb_dir()
    available = list_names(root)
    held_out = set(validation_names())
    names = [n for n in available if n not in held_out][: limit or None]
    val_names = [n for n in validation_names() if n in set(available)][: eval_images or None]
    click.echo(f"loading {len(names)} training and {len(val_names)} validation images from {root}", err=True)
    train_items = list(iter_labelled(root, names))
    val_items = list(iter_labelled(root, val_names))
    cfg = TrainConfig(steps=steps, batch=batch, crop=crop, lr=lr, restarts=restarts, contact_weight=contact_weight,
                      kind_weights=tuple({**dict(DEFAULTS.kind_weights), **dict(kind_weight)}.items()),
                      robust_augment=tuple(augment), diameter=diameter or None, scale_range=scale_range, base=base, widen=widenings,
                      average_from=average_from, eval_every=eval_every, checkpoint_every=checkpoint_every,
                      device=device, precision=precision, seed=seed, threads=threads)
    bar = tqdm(total=steps, desc="training", unit="step", file=sys.stderr)

    def progress(step, total, info):
        bar.set_postfix(loss=f"{info['loss']:.3f}", refresh=False)
        bar.update(step - bar.n)
        if step % 50 == 0:
            logging.info("step %d/%d loss %.4f", step, total, info["loss"])

    state = run(train_items, val_items, out, cfg, init_weights=init_weights, progress=progress)
    bar.close()
    if state["history"]:
        last = state["history"][-1]
        click.echo(f"step {last['step']}: " + ", ".join(f"{k}={v:.3f}" for k, v in last.items()
                                                      if isinstance(v, float) and k not in ("lr", "seconds")), err=True)
    if save_compact:
        compact_checkpoint(out / "last.pt", save_compact)
    if export:
        # The size model is fitted for these exact weights, on the images they were trained on.
        with tqdm(total=len(train_items), desc="size model", unit="image", file=sys.stderr) as fitting:
            fitted = export_weights(out / "model.pt", export, size_items=train_items, progress=fitting.update)
        click.echo(f"weights written to {export}" + ("" if fitted or not cfg.diameter else
                   f" without a size model (fewer than {MIN_FIT_IMAGES} labelled images): they measure nuclei on a "
                   "quick segmentation"), err=True)
    click.echo(str(out / "model.pt"))


def _schedule(steps: tuple[int, ...], values: tuple, recipe: tuple, fine_tuning: bool, steps_option: str,
              values_option: str) -> tuple[tuple[int, float], ...]:
    """(step, value) pairs from two repeated options. Fine-tuning from given weights has none unless asked for
    (one learning-rate cycle, the given width); else the recipe's."""
    if not steps:
        return () if fine_tuning else recipe
    if len(values) != len(steps):
        raise click.UsageError(f"give one {values_option} for each {steps_option}")
    return tuple((at, value) for at, value in zip(steps, values) if at > 0)
