"""How much a training run with the defaults teaches the model a lab's own images.

The "lab" is a source the shipped model never saw: images of the Kromp et al. fluorescence set
(../shared/data/kromp-sbsst265), by default its test split (37 images, 13 test classes; no single class has more than
7 images, too few for k = 20). k of them are "corrected" (given their true labels, as a lab would through the label
editor); the model is fine-tuned on them plus the base set through the trainer's own code
(shared.domain.training.loop.fine_tune, with the settings NUCLEUS_TRAINING_* or the --steps/--lr/--share/--freeze given here),
and the lab's other images are scored before and after. The scored images are the same for every k: the first
--reserve images of a fixed shuffle are the pool the corrected ones come from, the rest are scored.

    .venv/bin/python bench/adaptation.py --k 5 10 [--steps 200 --lr 5e-4 --share 0.5 --freeze none]

Prints one row per k (and variant) and appends each as a JSON line to --out. Kromp images are never base training
data: they appear here only as a lab's corrections.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import resource
import time
from pathlib import Path


from shared.infra.settings import Settings
from shared.domain.datasets.labelled import default_data_root, iter_labelled, list_names

KROMP = "kromp-sbsst265"


def kromp_names(root: Path, split: str, classes: list[str] | None) -> list[str]:
    with (root / "image_description.csv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    chosen = [r["Image_Name"] for r in rows if (split == "all" or r["Train-/Testset split"] == split)
              and (not classes or r["Testset class"] in classes)]
    present = set(list_names(root))
    return sorted(n for n in chosen if n in present)


def score(weights: bytes, items) -> dict:
    from shared.domain.evaluation import evaluate
    from shared.domain.model.segmenter import Segmenter

    scores, summary = evaluate(Segmenter(weights).segment, items)
    true, pred = sum(s.true_count for s in scores), sum(s.pred_count for s in scores)
    out = {k: summary["all"][k] for k in ("ap50", "dsb_score", "count_error_median")}
    out["total_count_error"] = abs(pred - true) / max(1, true)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--split", default="test", choices=("test", "train", "all"))
    parser.add_argument("--classes", nargs="*", help="Kromp test classes (e.g. NC-II); default: every class")
    parser.add_argument("--reserve", type=int, default=20, help="images the corrected ones are drawn from")
    parser.add_argument("--steps", type=int, help="training steps (default: NUCLEUS_TRAINING_STEPS_PER_EPOCH)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--share", type=float, help="share of user labels in each batch")
    parser.add_argument("--freeze", choices=("none", "encoder"))
    parser.add_argument("--batch", type=int)
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE,...",
                        help="a further recipe to compare, e.g. steps=200,lr=1e-3,share=0.7,freeze=encoder "
                             "(keys: steps lr share freeze batch; unnamed keys as above); repeatable")
    parser.add_argument("--validation-every", type=int, default=1,
                        help="score every n-th image of the DSB validation split (1: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--baseline-cache", type=Path, default=Path("/tmp/nucleus-adaptation-baseline.json"),
                        help="the shipped model's scores, kept between invocations (same images, same weights)")
    parser.add_argument("--out", type=Path, default=Path("bench/results-adaptation.jsonl"))
    args = parser.parse_args(argv)

    import torch

    from shared.infra.base_set import base_sets
    from shared.domain.model.segmenter import shipped_weights_path
    from shared.domain.training.loop import fine_tune

    if args.threads:
        torch.set_num_threads(args.threads)
    recipes = [recipe(args, "")] + [recipe(args, text) for text in args.variant]

    root = default_data_root() / KROMP
    names = kromp_names(root, args.split, args.classes)
    random.Random(args.seed).shuffle(names)
    if max(args.k) > min(args.reserve, len(names) - 1):
        parser.error(f"k up to {max(args.k)} needs --reserve >= k and more than k of the {len(names)} images")
    pool, scored_names = names[: args.reserve], names[args.reserve:]
    lab = {it.name: it for it in iter_labelled(root, names)}
    scored = [lab[n] for n in scored_names]

    base_train, validation = base_sets(recipes[0][0], None)
    validation = validation[:: args.validation_every]
    parent = shipped_weights_path().read_bytes()
    t = time.time()
    before = baseline(args.baseline_cache, parent, scored, validation)
    print(f"lab: {len(names)} Kromp {args.split} images{' of ' + ','.join(args.classes) if args.classes else ''}, "
          f"{len(scored)} scored; base {len(base_train)} images; validation {len(validation)} images; "
          f"scoring the shipped model took {time.time() - t:.0f} s", flush=True)
    for (settings, steps), k in itertools.product(recipes, args.k):
        corrected = [lab[n] for n in pool[:k]]
        load_before = os.getloadavg()[0]
        t, cpu = time.time(), cpu_seconds()
        tuned = fine_tune(parent, base_train, corrected, settings, steps, seed=args.seed)
        seconds, cpu = time.time() - t, cpu_seconds() - cpu
        load_after = os.getloadavg()[0]
        after = {"lab": score(tuned.weights, scored), "validation": score(tuned.weights, validation)}
        row = {"k": k, "steps": steps, "lr": settings.training_lr, "share": settings.training_user_share,
               "freeze": settings.training_freeze, "batch": settings.training_batch, "crop": settings.training_crop,
               "train_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "parts": tuned.seconds, "load_avg": [round(load_before, 2), round(load_after, 2)],
               "threads": torch.get_num_threads(), "split": args.split, "classes": args.classes or "all",
               "scored": len(scored), "validation_images": len(validation), "seed": args.seed,
               "before": before, "after": after}
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(format_row(row), flush=True)


def baseline(cache: Path, parent: bytes, scored, validation) -> dict:
    import hashlib

    key = hashlib.sha256(parent + json.dumps([[i.name for i in scored], [i.name for i in validation]]).encode())
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key.hexdigest() not in known:
        known[key.hexdigest()] = {"lab": score(parent, scored), "validation": score(parent, validation)}
        cache.write_text(json.dumps(known))
    return known[key.hexdigest()]


def cpu_seconds() -> float:
    """CPU time of this process: with the cores shared, wall time / (CPU time / threads) shows the contention."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def recipe(args, variant: str) -> tuple[Settings, int]:
    """(settings, steps) of the command-line recipe with `variant`'s changes ("steps=200,lr=1e-3")."""
    values = {"steps": args.steps, "lr": args.lr, "share": args.share, "freeze": args.freeze, "batch": args.batch}
    for pair in filter(None, variant.split(",")):
        key, value = pair.split("=", 1)
        if key not in values:
            raise SystemExit(f"unknown variant key {key!r}: one of {sorted(values)}")
        values[key] = value if key == "freeze" else float(value) if key in ("lr", "share") else int(value)
    names = {"lr": "training_lr", "share": "training_user_share", "freeze": "training_freeze", "batch": "training_batch"}
    settings = Settings(**{names[k]: v for k, v in values.items() if k in names and v is not None})
    return settings, values["steps"] or settings.training_steps_per_epoch


def format_row(row: dict) -> str:
    b, a = row["before"], row["after"]
    return (f"k={row['k']:>2} steps={row['steps']} lr={row['lr']:g} share={row['share']:g} freeze={row['freeze']} "
            f"| lab AP@0.5 {b['lab']['ap50']:.3f}->{a['lab']['ap50']:.3f} "
            f"DSB {b['lab']['dsb_score']:.3f}->{a['lab']['dsb_score']:.3f} "
            f"count err (median) {b['lab']['count_error_median']:.1%}->{a['lab']['count_error_median']:.1%} "
            f"| validation DSB {b['validation']['dsb_score']:.3f}->{a['validation']['dsb_score']:.3f} "
            f"| {row['train_seconds']:.0f} s = {' + '.join(f'{v:.0f} {k}' for k, v in row['parts'].items())} (CPU {row['cpu_seconds']:.0f} s; load {row['load_avg'][0]:.1f}-{row['load_avg'][1]:.1f})")


if __name__ == "__main__":
    main()
