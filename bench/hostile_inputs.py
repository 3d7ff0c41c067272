#!/usr/bin/env python3
"""What refusing each hostile label upload costs the API: time and peak resident-memory growth.

    .venv/bin/python bench/hostile_inputs.py [--size N] [--repeat R]

The API app runs in this process on a throwaway embedded default (SQLite, local object store) and is driven
through Flask's test client; each request's body is built before the measurement starts, so the figures are
the API's own: the time from the request to its 4xx, and how far the process's peak resident memory
(/proc/self/status VmHWM, reset through /proc/self/clear_refs before each request) rose above what it held
before. Every case in testkit/hostile.py's catalogue is sent against an N x N image (--size, default 256,
or NUCLEUS_BENCH_HOSTILE_SIZE), the median of --repeat runs printed; then well-formed uploads of each format
(label PNG, mask zip, RoiSet.zip, QuPath GeoJSON) for comparison, and the accepted uploads that cost the most
memory per pixel, against shared.domain.labels.memory_bound.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np

MiB = 1 << 20


def harness_in(data_dir: str):
    for name in [n for n in os.environ if n.startswith("NUCLEUS_")]:
        del os.environ[name]
    os.environ["NUCLEUS_DATA_DIR"] = data_dir
    os.environ["NUCLEUS_LOG_LEVEL"] = "WARNING"
    os.environ["NUCLEUS_LABEL_UPLOAD_RATE"] = ""  # every case is measured, none is refused for its rate
    os.environ["NUCLEUS_UPLOAD_RATE_PER_MINUTE"] = "0"
    from shared.infra.settings import get_settings
    from testkit.api import ApiHarness

    return ApiHarness(get_settings())


def one_image_api(data_dir: str, shape: tuple[int, int]):
    """The API in-process with one uploaded image of `shape`: (test client, uploader token, image id)."""
    from testkit.api import png_bytes

    harness = harness_in(data_dir)
    admin = harness.client("admin")
    assert admin.post("/api/v1/experiments", json={"name": "hostile"}).status_code == 201
    pixels = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    image_id = admin.upload("hostile", [("field.png", png_bytes(pixels))]).json["images"][0]["id"]
    return harness.app.test_client(), harness.token("uploader"), image_id


def well_formed(shape: tuple[int, int]) -> list[tuple[str, bytes, str]]:
    """(what, bytes, filename): real labels of each format, nuclei on a grid of 24-pixel cells."""
    import zipfile

    from roifile import ImagejRoi

    from testkit.api import png_bytes

    from shared.domain.labels.masks import MAX_MASK_PIXELS, MAX_MASKS

    height, width = shape
    most_masks = min(MAX_MASKS, MAX_MASK_PIXELS // (height * width))
    labels = np.zeros(shape, np.uint16)
    outlines = []
    for n, (y, x) in enumerate(((y, x) for y in range(4, height - 20, 24) for x in range(4, width - 20, 24)), 1):
        labels[y:y + 16, x:x + 16] = n
        outlines.append([[x, y], [x + 16, y], [x + 16, y + 16], [x, y + 16]])
    masks = io.BytesIO()
    with zipfile.ZipFile(masks, "w") as archive:
        for n in range(1, min(len(outlines), most_masks) + 1):
            archive.writestr(f"masks/{n:05d}.png", png_bytes(((labels == n) * 255).astype(np.uint8)))
    roiset = io.BytesIO()
    with zipfile.ZipFile(roiset, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, ring in enumerate(outlines, 1):
            archive.writestr(f"{n:05d}.roi", ImagejRoi.frompoints(np.array(ring), name=str(n)).tobytes())
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
                 "properties": {"objectType": "detection", "measurements": {"Area": 256.0, "Circularity": 1.0}}}
                for ring in outlines]
    return [(f"label PNG, {len(outlines)} nuclei", png_bytes(labels), "labels.png"),
            (f"mask zip, {min(len(outlines), most_masks)} masks", masks.getvalue(), "masks.zip"),
            (f"RoiSet.zip, {len(outlines)} ROIs", roiset.getvalue(), "RoiSet.zip"),
            (f"QuPath GeoJSON, {len(outlines)} detections",
             json.dumps({"type": "FeatureCollection", "features": features}).encode(), "cells.geojson")]


HEAVIEST = ("uint32 TIFF", "4-channel TIFF", "16-bit PNG", "mask zip", "RoiSet", "GeoJSON")  # heaviest()'s order


def heaviest(shape: tuple[int, int]) -> list[tuple[str, bytes, str]]:
    """(what, bytes, filename): accepted uploads built to cost the most memory per pixel of the image."""
    import zipfile

    import tifffile
    from roifile import ImagejRoi

    from shared.domain.labels import geojson
    from testkit.api import png_bytes

    def tiff(array: np.ndarray, **options) -> bytes:
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, compression="zlib", **options)
        return buffer.getvalue()

    height, width = shape
    grid = ((np.arange(height)[:, None] // 4) * (width // 4) + np.arange(width)[None, :] // 4 + 1).astype(np.uint32)
    masks = io.BytesIO()
    with zipfile.ZipFile(masks, "w") as archive:
        for n in range(8):
            mask = np.zeros((*shape, 3), np.uint16)
            mask[n * height // 8: (n + 1) * height // 8 - 2, 2: width - 2] = 65535
            archive.writestr(f"masks/{n:02d}.tif", tiff(mask, photometric="rgb"))
    discs = io.BytesIO()
    with zipfile.ZipFile(discs, "w", zipfile.ZIP_DEFLATED) as archive:
        angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
        for n in range(20):
            radius = min(shape) * (1 / 3 - n / 70)
            ring = np.stack([width / 2 + radius * np.cos(angles), height / 2 + radius * np.sin(angles)], axis=1)
            archive.writestr(f"{n:04d}.roi", ImagejRoi.frompoints(ring.astype(np.float32), name=str(n)).tobytes())
    features, values = [], 0
    limit = max(geojson.MIN_VALUES, height * width // geojson.PIXELS_PER_VALUE)
    while values < 0.9 * limit:  # small triangles tiling the image, 20 values each
        y, x = divmod(len(features) * 7, width - 8)
        y = (y * 7) % (height - 8)
        ring = [[x + 0.5, y + 0.5], [x + 6.5, y + 0.5], [x + 3.5, y + 6.5], [x + 0.5, y + 0.5]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "detection"}})
        values += 20
    return [("uint32 TIFF label, 4x4-pixel nuclei everywhere", tiff(grid), "labels.tif"),
            ("4-channel uint32 TIFF label (channels equal)",
             tiff(np.repeat(grid[..., None], 4, axis=2), photometric="rgb", extrasamples=["unassalpha"]), "labels.tif"),
            ("16-bit PNG label, 4x4-pixel nuclei everywhere", png_bytes((grid % 65535 + 1).astype(np.uint16)),
             "labels.png"),
            ("mask zip, 8 full-size 16-bit RGB TIFF masks", masks.getvalue(), "masks.zip"),
            ("RoiSet.zip, 20 nested discs of 2000 points", discs.getvalue(), "RoiSet.zip"),
            (f"QuPath GeoJSON, {len(features)} detections (90 % of the value limit)",
             json.dumps(features).encode(), "cells.geojson")]


def send(client, token: str, image_id: str, data: bytes, filename: str):
    """One label upload, its body built first; returns (response, Cost)."""
    from werkzeug.test import EnvironBuilder

    from testkit.hostile import measured

    builder = EnvironBuilder(path=f"/api/v1/images/{image_id}/labels", method="POST",
                             headers={"Authorization": f"Bearer {token}"},
                             data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data")
    environ = builder.get_environ()
    builder.close()
    with measured() as cost:
        response = client.open(environ)
        response.get_data()
    return response, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=int(os.environ.get("NUCLEUS_BENCH_HOSTILE_SIZE", 256)))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--heavy", type=int, help=argparse.SUPPRESS)  # one heavy case, in a child process
    args = parser.parse_args()
    if args.heavy is not None:
        return one_heavy(args.size, args.heavy)

    from testkit.hostile import can_reset_peak, catalogue

    if not can_reset_peak():
        sys.exit("needs Linux's /proc/self/clear_refs to reset the peak memory between requests")
    shape = (args.size, args.size)
    with tempfile.TemporaryDirectory() as data_dir:
        client, token, image_id = one_image_api(data_dir, shape)
        good = well_formed(shape)
        for _, data, filename in good:  # warm-up: imports and first-use caches are not what is measured
            send(client, token, image_id, data, filename)

        print(f"Hostile label uploads for a {args.size}x{args.size} image (API in-process, Flask test client); "
              f"median of {args.repeat}; peak = growth of the process's peak resident memory")
        print(f"{'input':<62} {'bytes':>10} {'status':>6}  {'code':<20} {'seconds':>8} {'peak MiB':>9}")
        for case in catalogue(shape):
            data, filename = case.make()
            runs = [send(client, token, image_id, data, filename) for _ in range(args.repeat)]
            response = runs[0][0]
            code = (response.get_json(silent=True) or {}).get("error", {}).get("code", "")
            seconds = statistics.median(cost.seconds for _, cost in runs)
            peak = statistics.median(cost.peak_growth_bytes for _, cost in runs) / MiB
            flag = "" if (response.status_code, code) == (case.status, case.code) else "  UNEXPECTED"
            print(f"{case.name:<62} {len(data):>10} {response.status_code:>6}  {code:<20} {seconds:>8.3f} "
                  f"{peak:>9.1f}{flag}")
        print()
        print("Well-formed uploads of each format, for comparison (the first stores a label, the rest are duplicates)")
        for what, data, filename in good:
            runs = [send(client, token, image_id, data, filename) for _ in range(args.repeat)]
            seconds = statistics.median(cost.seconds for _, cost in runs)
            peak = statistics.median(cost.peak_growth_bytes for _, cost in runs) / MiB
            print(f"{what:<62} {len(data):>10} {runs[0][0].status_code:>6}  {'':<20} {seconds:>8.3f} {peak:>9.1f}")
    print()
    print("Heaviest accepted uploads, each in a fresh process (its allocator not yet warmed by bigger requests), "
          "against the stated bound (2 x file + 32 B/pixel + 16 MiB)")
    for index in range(len(HEAVIEST)):
        child = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--heavy", str(index)],
                               capture_output=True, text=True, cwd=REPO)
        print(child.stdout.rstrip() or child.stderr.strip().splitlines()[-1])


def one_heavy(size: int, index: int) -> None:
    from shared.domain.labels import memory_bound
    from testkit.api import png_bytes

    shape = (size, size)
    with tempfile.TemporaryDirectory() as data_dir:
        client, token, image_id = one_image_api(data_dir, shape)
        small = np.zeros(shape, np.uint16)
        small[:8, :8] = 1
        send(client, token, image_id, png_bytes(small), "warm.png")  # imports, not what is measured
        what, data, filename = heaviest(shape)[index]
        response, cost = send(client, token, image_id, data, filename)
        bound = memory_bound(len(data), shape)
        flag = "" if response.status_code < 300 and cost.peak_growth_bytes <= bound else \
            "  OVER" if response.status_code < 300 else f"  {response.get_json()}"
        print(f"{what:<62} {len(data):>10} {response.status_code:>6}  {'bound ' + f'{bound / MiB:.0f} MiB':<20} "
              f"{cost.seconds:>8.3f} {cost.peak_growth_bytes / MiB:>9.1f}{flag}")


if __name__ == "__main__":
    main()
