"""Choose the post-processing thresholds on images of the *training* split (never the validation split).

The network runs once per image; each grid point then only re-runs the post-processing. Prints the grid
ranked by DSB score among the settings whose median count error stays within COUNT_ERROR_LIMIT, and beyond
that limit by count error (counts are what most users read first, so a setting that buys DSB score by
dropping real nuclei does not win). The winner goes into `PostprocessSettings`' defaults
(shared/domain/segmentation/postprocess.py), which `export_weights` stores inside the shipped weights.

    .venv/bin/python bench/tune_postprocess.py [--weights PATH] [--images 80]
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import random
import sys

from tqdm import tqdm

from shared.domain.model.options import DEFAULT_VIEWS, VIEWS
from shared.domain.datasets.labelled import default_dsb_dir, iter_labelled, training_names
from shared.domain.accuracy import score_image, summarize
from shared.domain.model.segmenter import Segmenter
from shared.domain.segmentation.postprocess import PostprocessSettings, instances

GRID = {
    "foreground_threshold": (0.5, 0.6),
    "seed_height": (0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
    "smoothing": (0.0, 0.5, 1.0),
    "min_confidence": (0.0, 0.7, 0.8),
}
COUNT_ERROR_LIMIT = 0.05  # the target for the median count error
_CACHED: list = []  # (labelled image, network maps) pairs, shared with the grid's worker processes


def _score(settings: PostprocessSettings) -> dict:
    return summarize([score_image(item.name, item.kind, item.labels,
                                  instances(p.foreground, p.boundary, p.distance, settings)) for item, p in _CACHED])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--views", type=int, default=DEFAULT_VIEWS, choices=VIEWS,
                        help="flips/turns averaged by the network (test-time augmentation)")
    parser.add_argument("--data", default=None, help="DSB2018 folder (default: in $NUCLEUS_DATA_ROOT)")
    parser.add_argument("--images", type=int, default=80, help="training images to tune on (a fixed random draw)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes scoring the grid")
    args = parser.parse_args()

    root = args.data or default_dsb_dir()
    names = random.Random(80).sample(training_names(root), args.images)
    segmenter = Segmenter(args.weights, views=args.views)
    cached = [(item, segmenter.predict(item.image))
              for item in tqdm(iter_labelled(root, names), total=len(names), desc="network", file=sys.stderr)]
    candidates = [PostprocessSettings(**dict(zip(GRID, values))) for values in itertools.product(*GRID.values())]
    if segmenter.postprocess not in candidates:
        candidates.append(segmenter.postprocess)
    _CACHED[:] = cached  # forked workers inherit it
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        summaries = list(tqdm(pool.imap(_score, candidates), total=len(candidates), desc="grid", file=sys.stderr))
    results = list(zip(summaries, candidates))
    # Within the count limit the DSB score decides; beyond it, the smaller count error.
    results.sort(key=lambda r: (max(r[0]["count_error_median"], COUNT_ERROR_LIMIT), -r[0]["dsb_score"]))
    current = next(s for s, settings in results if settings == segmenter.postprocess)
    print(f"{len(cached)} training images, weights {segmenter.version}; current settings: DSB "
          f"{current['dsb_score']:.3f}, AP@0.5 {current['ap50']:.3f}, count error {current['count_error_median']:.1%}")
    print(f"{'foreground':>10} {'seed height':>11} {'smoothing':>9} {'confidence':>10} "
          f"{'DSB':>6} {'AP@0.5':>7} {'IoU':>6} {'count err':>9}")
    for summary, s in results[: args.top]:
        print(f"{s.foreground_threshold:>10} {s.seed_height:>11} {s.smoothing:>9} {s.min_confidence:>10} "
              f"{summary['dsb_score']:>6.3f} {summary['ap50']:>7.3f} {summary['pixel_iou']:>6.3f} "
              f"{summary['count_error_median']:>9.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
