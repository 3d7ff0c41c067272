"""`nucleus evaluate --data DIR`: accuracy of a model on a labelled set."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from shared.domain.model.options import DEFAULT_VIEWS, PRECISIONS, RUNTIMES, VIEWS


@click.command()
@click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A labelled set: images/ + labels/ folders, or the competition's <id>/images + <id>/masks layout.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Model weights (default: the shipped model).")
@click.option("--validation-split", is_flag=True,
              help="Only the images of the fixed DSB2018 validation split (for the DSB2018 folder).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: metrics overall, per image type and per image.")
@click.option("--device", default=None)
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: bfloat16 mixed precision where the CPU/GPU has the instructions, else float32.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
              help="auto: ONNX Runtime on a CPU without native bfloat16, else PyTorch.")
@click.option("--views", type=click.Choice([str(v) for v in VIEWS]), default=str(DEFAULT_VIEWS), show_default=True,
              help="Flips and 90° turns of each image averaged by the network (test-time augmentation).")
def evaluate(data: Path, weights: Path | None, validation_split: bool, as_json: bool, device: str | None,
             precision: str, runtime: str, views: str):
    """Print mean pixel IoU, AP at IoU 0.5, the DSB score and count error, overall and per image type."""
    from tqdm import tqdm

    from shared.domain.datasets.labelled import iter_labelled, list_names, validation_names
    from shared.domain.evaluation import evaluate as run, format_table
    from shared.domain.accuracy import as_rows
    from shared.domain.model.segmenter import Segmenter

    names = list_names(data)
    if validation_split:
        held_out = set(validation_names())
        names = [n for n in names if n in held_out]
    if not names:
        raise click.UsageError(f"no labelled images found under {data}")
    segmenter = Segmenter(weights, device=device, precision=precision, views=int(views), runtime=runtime)
    bar = tqdm(total=len(names), desc="evaluating", unit="image", file=sys.stderr)
    scores, summary = run(segmenter.segment, iter_labelled(data, names), progress=lambda _: bar.update())
    bar.close()
    if as_json:
        click.echo(json.dumps({"model_version": segmenter.version, "data": str(data), "metrics": summary,
                               "images": as_rows(scores)}, indent=1))
    else:
        click.echo(f"model {segmenter.version} on {data} ({len(scores)} images)")
        click.echo(format_table(summary, "image type"))
