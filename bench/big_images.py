#!/usr/bin/env python3
"""Worker time and peak memory for one big image, at each size asked for (megapixels).

    .venv/bin/python bench/big_images.py [--megapixels 16 67 250] [--region 2048]

Each size is a square grey mosaic of real DSB2018 fluorescence images (under $NUCLEUS_DATA_ROOT, default
../shared/data), written as an uncompressed TIFF; a fresh child process then does what a worker does with it:
decode it (shared.domain.imaging.reading),
segment and measure it (shared.domain.segmentation.tiled.segment_and_measure, whole or in regions by NUCLEUS_WHOLE_IMAGE_MAX_PIXELS),
write the label TIFF, the overlay PNG and the nuclei CSV. Peak memory is the child's VmHWM (resident high-water
mark), after loading the model and at the end; `estimate` is what the API would reckon (shared.domain.segmentation.tiled). Settings
pass through (NUCLEUS_TILE_SIZE, NUCLEUS_TORCH_THREADS, NUCLEUS_WHOLE_IMAGE_MAX_PIXELS...).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def vm_hwm() -> int:
    """This process's resident high-water mark, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def mosaic(side: int, images: Path | None = None, seed: int = 0) -> np.ndarray:
    """A side x side uint8 mosaic of 256x256 fluorescence images (dark background), placed at random."""
    from PIL import Image

    from shared.domain.datasets.labelled import default_dsb_dir

    images = images or default_dsb_dir() / "images"
    pieces = []
    for path in sorted(images.iterdir()):
        picture = np.asarray(Image.open(path / "images" / f"{path.name}.png") if path.is_dir() else Image.open(path))
        if picture.shape[:2] == (256, 256) and picture[..., :3].mean() < 40:
            pieces.append(picture[..., :3].mean(axis=2).astype(np.uint8))
        if len(pieces) == 64:
            break
    rng = np.random.default_rng(seed)
    n = math.ceil(side / 256)
    rows = [np.concatenate([pieces[i] for i in rng.integers(0, len(pieces), n)], axis=1) for _ in range(n)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:side, :side])


def child(path: str, region: int, network_tile: int) -> dict:
    from shared.domain.segmentation import tiled
    from shared.infra.settings import get_settings
    from shared.domain.measurement import measure_nuclei
    from shared.domain.model.segmenter import Segmenter
    from shared.domain.outputs import labels_tiff, nuclei_csv, overlay_png
    from shared.domain.imaging.read_options import ReadOptions
    from shared.domain.imaging.reading import read_picture

    settings = get_settings()
    segmenter = Segmenter.from_settings(settings.weights_path, settings)
    after_model = vm_hwm()
    started = time.perf_counter()
    picture = read_picture(Path(path).read_bytes(), ReadOptions(), max_pixels=settings.max_pixels)
    image = picture.nuclear
    decoded = time.perf_counter()

    def measure(found, box):
        return measure_nuclei(found, image[box], None, None, None)

    if region:
        tiled.REGION = region
    if network_tile:
        tiled.NETWORK_TILE = network_tile
    labels, rows = tiled.segment_and_measure(segmenter, image, measure, None, settings.whole_image_max_pixels)
    segmented = time.perf_counter()
    written = len(labels_tiff(labels)) + len(overlay_png(*tiled.overlay_view(image, labels)))
    written += len(nuclei_csv(rows))
    done = time.perf_counter()
    return {"megapixels": image.size / 1e6, "nuclei": len(rows), "decode_s": decoded - started,
            "segment_measure_s": segmented - decoded, "write_s": done - segmented, "total_s": done - started,
            "peak_after_model_gb": after_model / 1e9, "peak_gb": vm_hwm() / 1e9, "output_mb": written / 1e6,
            "estimate_gb": tiled.worker_memory_needed(*image.shape[:2], image.nbytes, settings) / 1e9,
            "tiled": image.size > settings.whole_image_max_pixels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1.0])
    parser.add_argument("--region", type=int, default=0, help="core side of a region (default: shared.domain.segmentation.tiled's)")
    parser.add_argument("--network-tile", type=int, default=0, help="the network's tile within a region "
                        "(default: shared.domain.segmentation.tiled's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.region, args.network_tile)))
        return
    print(f"{'MP':>6} {'tiled':>5} {'nuclei':>7} {'decode s':>8} {'seg+meas s':>10} {'write s':>7} {'total s':>7} "
          f"{'model GB':>8} {'peak GB':>7} {'estimate GB':>11}", flush=True)
    for megapixels in args.megapixels:
        side = round(math.sqrt(megapixels * 1e6))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "mosaic.tif"
            import tifffile

            tifffile.imwrite(path, mosaic(side))
            out = subprocess.run([sys.executable, __file__, "--child", str(path), "--region", str(args.region),
                                  "--network-tile", str(args.network_tile)],
                                 check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['megapixels']:6.1f} {'yes' if r['tiled'] else 'no':>5} {r['nuclei']:7d} {r['decode_s']:8.1f} "
              f"{r['segment_measure_s']:10.1f} {r['write_s']:7.1f} {r['total_s']:7.1f} "
              f"{r['peak_after_model_gb']:8.2f} {r['peak_gb']:7.2f} {r['estimate_gb']:11.2f}", flush=True)


if __name__ == "__main__":
    main()
