#!/usr/bin/env python3
"""What refusing each hostile label upload costs the API: time and peak resident-memory growth.

    .venv/bin/python bench/hostile_inputs.py [--size N] [--repeat R]

The API app runs in this process on a throwaway embedded default (SQLite, local object store) and is driven
through Flask's test client; each request's body is built before the measurement starts, so the figures are
the API's own: the time from the request to its 4xx, and how far the process's peak resident memory
(/proc/self/status VmHWM, reset through /proc/self/clear_refs before each request) rose above what it held
before. Every case in tests/support/hostile.py's catalogue is sent against an N x N image (--size, default 256,
or NUCLEUS_BENCH_HOSTILE_SIZE), the median of --repeat runs printed; then well-formed uploads of each format
(label PNG, mask zip, RoiSet.zip, QuPath GeoJSON) for comparison.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

MiB = 1 << 20


def harness_in(data_dir: str):
    for name in [n for n in os.environ if n.startswith("NUCLEUS_")]:
        del os.environ[name]
    os.environ["NUCLEUS_DATA_DIR"] = data_dir
    os.environ["NUCLEUS_LOG_LEVEL"] = "WARNING"
    from shared.config import get_settings
    from tests.support.api import ApiHarness

    return ApiHarness(get_settings())


def well_formed(shape: tuple[int, int]) -> list[tuple[str, bytes, str]]:
    """(what, bytes, filename): real labels of each format, nuclei on a grid of 24-pixel cells."""
    import zipfile

    from roifile import ImagejRoi

    from tests.support.api import png_bytes

    height, width = shape
    labels = np.zeros(shape, np.uint16)
    outlines = []
    for n, (y, x) in enumerate(((y, x) for y in range(4, height - 20, 24) for x in range(4, width - 20, 24)), 1):
        labels[y:y + 16, x:x + 16] = n
        outlines.append([[x, y], [x + 16, y], [x + 16, y + 16], [x, y + 16]])
    masks = io.BytesIO()
    with zipfile.ZipFile(masks, "w") as archive:
        for n in range(1, min(len(outlines), 2000) + 1):
            archive.writestr(f"masks/{n:05d}.png", png_bytes(((labels == n) * 255).astype(np.uint8)))
    roiset = io.BytesIO()
    with zipfile.ZipFile(roiset, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, ring in enumerate(outlines, 1):
            archive.writestr(f"{n:05d}.roi", ImagejRoi.frompoints(np.array(ring), name=str(n)).tobytes())
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
                 "properties": {"objectType": "detection", "measurements": {"Area": 256.0, "Circularity": 1.0}}}
                for ring in outlines]
    return [(f"label PNG, {len(outlines)} nuclei", png_bytes(labels), "labels.png"),
            (f"mask zip, {min(len(outlines), 2000)} masks", masks.getvalue(), "masks.zip"),
            (f"RoiSet.zip, {len(outlines)} ROIs", roiset.getvalue(), "RoiSet.zip"),
            (f"QuPath GeoJSON, {len(outlines)} detections",
             json.dumps({"type": "FeatureCollection", "features": features}).encode(), "cells.geojson")]


def send(client, token: str, image_id: str, data: bytes, filename: str):
    """One label upload, its body built first; returns (response, Cost)."""
    from werkzeug.test import EnvironBuilder

    from tests.support.hostile import measured

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
    args = parser.parse_args()

    from tests.support.api import png_bytes
    from tests.support.hostile import can_reset_peak, catalogue

    if not can_reset_peak():
        sys.exit("needs Linux's /proc/self/clear_refs to reset the peak memory between requests")
    shape = (args.size, args.size)
    with tempfile.TemporaryDirectory() as data_dir:
        harness = harness_in(data_dir)
        admin = harness.client("admin")
        assert admin.post("/api/v1/experiments", json={"name": "hostile"}).status_code == 201
        pixels = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
        image_id = admin.upload("hostile", [("field.png", png_bytes(pixels))]).json["images"][0]["id"]
        token = harness.token("uploader")
        client = harness.app.test_client()
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
        from shared.labels import MEMORY_BYTES_PER_PIXEL

        bound = (2 * len(max((d for _, d, _ in good), key=len)) + MEMORY_BYTES_PER_PIXEL * args.size ** 2) / MiB
        print(f"\nStated bound for one label upload here: 2 x file + {MEMORY_BYTES_PER_PIXEL} B/pixel "
              f"= {bound:.1f} MiB for the largest well-formed file above")


if __name__ == "__main__":
    main()
