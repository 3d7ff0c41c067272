"""Accuracy on the fixed DSB2018 validation split: the shipped model, the same model with plain
connected components instead of instance separation, the classical threshold+watershed baseline, and the
shipped model with fewer and more test-time views. Then out of source: the same split by image type beside the
Kromp fluorescence set's test split by its test class (images from labs the model never saw), shipped model and
classical baseline side by side, and with --against a second weights file beside them (a candidate against the
shipped one, scored by the same code on the same images in one run).

    .venv/bin/python bench/accuracy.py [--weights PATH] [--against PATH] [--limit N] [--kromp DIR | --kromp none]
        [--nuinsseg DIR] [--json OUT] [--plot OUT.png]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from shared.domain.model.options import DEFAULT_VIEWS, RUNTIMES, VIEWS
from shared.domain.datasets.labelled import default_dsb_dir, iter_labelled, list_names, validation_names
from shared.domain.evaluation import evaluate, format_table
from shared.domain.model import precision as mixed_precision
from shared.domain.model.precision import CHOICES
from shared.domain.model.segmenter import Segmenter
from shared.domain.segmentation.postprocess import classical
from shared.domain.datasets.sources import default_kromp_dir, iter_kromp, iter_nuinsseg_yolo

SIDE_BY_SIDE = (("ap50", "AP@0.5", "{:.3f}"), ("dsb_score", "DSB", "{:.3f}"), ("pixel_iou", "IoU", "{:.3f}"),
                ("count_error_median", "count err", "{:.1%}"))


def cpu_name() -> str:
    """The CPU model and whether it has native bfloat16: speeds differ several-fold between machines."""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        name = ""
    native = mixed_precision.native_bf16(torch.device("cpu"))
    return f"{name or platform.processor() or 'unknown'} ({'with' if native else 'without'} native bfloat16)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--against", default=None,
                        help="a second weights file scored on every split beside --weights (column C)")
    parser.add_argument("--views", type=int, default=DEFAULT_VIEWS, choices=VIEWS,
                        help="flips/turns averaged by the network (test-time augmentation)")
    parser.add_argument("--compare-views", type=int, nargs="*", default=[2, 8], choices=VIEWS,
                        help="also score the model with these numbers of views")
    parser.add_argument("--data", default=None, help="DSB2018 folder (default: in $NUCLEUS_DATA_ROOT)")
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N validation images (and of each test split)")
    parser.add_argument("--kromp", default=None,
                        help="Kromp S-BSST265 folder (default: in $NUCLEUS_DATA_ROOT); 'none': skip it")
    parser.add_argument("--nuinsseg", default=None,
                        help="NuInsSeg in YOLO layout (docs/DATA_CARD.md): also score its test split, H&E tissue")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=CHOICES)
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES)
    parser.add_argument("--json", default=None, help="also write all numbers here")
    parser.add_argument("--plot", default=None, help="also draw the out-of-source table here (PNG)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = Path(args.data or default_dsb_dir())
    present = set(list_names(root))  # every name in the full set; a few in the tests' subset
    names = [name for name in validation_names() if name in present][: args.limit or None]
    items = list(iter_labelled(root, names))
    segmenter = Segmenter(args.weights, precision=args.precision, views=args.views, runtime=args.runtime)
    segmenter.segment(items[0].image)  # warm-up: first call pays for allocations
    methods = {
        f"U-Net + seeded watershed ({segmenter.version}, {args.views} view{'s' * (args.views > 1)})": segmenter.segment,
        "U-Net + connected components": segmenter.segment_connected_components,
        "classical threshold + watershed": classical,
    }
    against = None
    if args.against:
        other = Segmenter(args.against, precision=args.precision, views=args.views, runtime=args.runtime)
        against = f"U-Net + seeded watershed ({other.version}, {args.views} view{'s' * (args.views > 1)})"
        if against in methods:
            parser.error(f"--against {args.against} is the same weights as --weights ({other.version})")
        methods[against] = other.segment
    # What more test-time views buy: the same model seeing each image also mirrored, and in all eight flips and turns.
    for views in args.compare_views:
        if views != args.views:
            methods[f"U-Net + seeded watershed, {views} view{'s' * (views > 1)}"] = Segmenter(
                args.weights, precision=args.precision, views=views, runtime=args.runtime).segment
    results = {}
    for title, fn in methods.items():
        bar = tqdm(total=len(items), desc=title[:40], file=sys.stderr)
        _, summary = evaluate(fn, items, progress=lambda _: bar.update())
        bar.close()
        results[title] = summary
    per_kind = ", ".join(f"{kind} {m['images']}" for kind, m in next(iter(results.values())).items() if kind != "all")
    print(f"DSB2018 stage-1 validation split: {len(items)} images ({per_kind}), torch threads {torch.get_num_threads()}, "
          f"{segmenter.amp_dtype or torch.float32}, runtime {segmenter.runtime}, CPU {cpu_name()}")
    print(format_table({title: r["all"] for title, r in results.items()}, "method"))
    print()
    print("per image type, shipped model:")
    first = next(iter(results.values()))
    print(format_table({k: v for k, v in first.items() if k != "all"}, "image type"))
    print()
    shipped, baseline = next(iter(results)), "classical threshold + watershed"
    columns = {"A": shipped, "B": baseline} | ({"C": against} if against else {})
    out_of_source = {f"DSB2018 validation, {kind}": {m: results[m][kind] for m in columns.values()}
                     for kind in first}
    if args.kromp != "none":
        kromp = list(iter_kromp(args.kromp or default_kromp_dir(), "test", limit=args.limit))
        kromp_results = {}
        for title in columns.values():
            bar = tqdm(total=len(kromp), desc=f"Kromp test: {title[:28]}", file=sys.stderr)
            _, kromp_results[title] = evaluate(methods[title], kromp, progress=lambda _: bar.update())
            bar.close()
        for kind in kromp_results[shipped]:
            out_of_source[f"Kromp test, {kind}"] = {m: kromp_results[m][kind] for m in columns.values()}
        results["kromp-test"] = kromp_results
    if args.nuinsseg:
        tissue = list(iter_nuinsseg_yolo(args.nuinsseg, "test", limit=args.limit))
        for title in columns.values():
            bar = tqdm(total=len(tissue), desc=f"NuInsSeg test: {title[:26]}", file=sys.stderr)
            _, summary = evaluate(methods[title], tissue, progress=lambda _: bar.update())
            bar.close()
            results.setdefault("nuinsseg-test", {})[title] = summary
        out_of_source["NuInsSeg test (H&E tissue, 31 organs), all"] = {
            m: results["nuinsseg-test"][m]["all"] for m in columns.values()}
    print()
    named = "; ".join(f"{label}: {title}" for label, title in columns.items())
    print(f"out of source ({named}); Kromp test classes as the dataset names them:")
    print(side_by_side(out_of_source, columns))
    if args.plot:
        plot_side_by_side(out_of_source, columns, Path(args.plot))
    print()
    print(speed_table(segmenter))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


def side_by_side(groups: dict[str, dict[str, dict]], methods: dict[str, str]) -> str:
    """{group: {method: metrics}} → one row per group, the chosen metrics of each method (by its short label) in
    adjacent columns."""
    header = ["split, image type or test class", "images"]
    header += [f"{label} {title}" for _, title, _ in SIDE_BY_SIDE for label in methods]
    lines = [header]
    for group, by_method in groups.items():
        any_metrics = next(iter(by_method.values()))
        line = [group, str(any_metrics.get("images", ""))]
        for key, _, fmt in SIDE_BY_SIDE:
            for method in methods.values():
                value = by_method.get(method, {}).get(key)
                line.append("" if value is None else fmt.format(value))
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot_side_by_side(groups: dict[str, dict[str, dict]], methods: dict[str, str], path: Path) -> None:
    """The out-of-source table as two bar charts, one bar per method in each group: AP@0.5 and median count
    error, the two figures users read first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(groups)
    y = np.arange(len(names))
    height = 0.8 / len(methods)
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.32 * len(names)), sharey=True)
    for ax, key, label in ((axes[0], "ap50", "AP@0.5 (higher is better)"),
                           (axes[1], "count_error_median", "median count error (lower is better)")):
        for i, (short, title) in enumerate(methods.items()):
            values = [groups[g].get(title, {}).get(key, np.nan) for g in names]
            ax.barh(y + (i - (len(methods) - 1) / 2) * height, values, height, label=f"{short}: {title[:60]}")
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_xlim(0, 1)
    axes[0].set_yticks(y, [f"{g} ({next(iter(groups[g].values())).get('images', '')})" for g in names])
    axes[0].invert_yaxis()
    axes[1].xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=1, fontsize="small",
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def speed_table(segmenter: Segmenter, repeats: int = 3, per_size: int = 6) -> str:
    """Seconds per image for the whole segment() call (network + post-processing), by image size.

    Time depends on the nuclei as well as the size (images of small nuclei are enlarged before the network
    sees them), so each size is timed on several images: the median and the slowest are printed."""
    import csv

    import numpy as np

    from shared.domain.datasets.labelled import load

    root = default_dsb_dir()
    wanted: dict[tuple[int, int], list[str]] = {(256, 256): [], (1024, 1024): []}
    with open(root / "index.csv") as fh:
        for row in csv.DictReader(fh):
            key = (int(row["width"]), int(row["height"]))
            if key in wanted and len(wanted[key]) < per_size:
                wanted[key].append(row["image_id"])
    lines = [f"seconds per image (segment(): normalisation, network, post-processing), median of {repeats} runs "
             f"on each of up to {per_size} images per size:"]
    for (w, h), names in wanted.items():
        per_image, factors = [], []
        for name in names:
            image = load(root, name).image
            segmenter.segment(image)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                segmenter.segment(image)
                times.append(time.perf_counter() - start)
            per_image.append(float(np.median(times)))
            factors.append(segmenter.scale_factor(image))
        if per_image:
            lines.append(f"  {w}x{h}: median {np.median(per_image):.3f} s, slowest {max(per_image):.3f} s "
                         f"over {len(per_image)} images (enlarged x{', x'.join(f'{f:.2f}' for f in factors)})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
