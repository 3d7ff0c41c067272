#!/usr/bin/env python3
"""Seconds from upload to result, and the model's share of them, for a 256x256 and a 1024x1024 image.

    .venv/bin/python bench/latency.py [-n 10] [--url URL --token TOKEN] [--in-process]

Without --url it starts `nucleus up` on a free port and a temporary data directory (the embedded
default) and stops it at the end. Images are real DSB2018 images from ../shared/data. Uploads are
sequential (one image in flight: latency, not throughput); each round goes to a new experiment,
so the same bytes are a new image and a new job, not a duplicate. One warm-up round is not counted.

"model" is the worker's own timing of the segmentation step (the result's `seconds_model`);
"worker" is the whole task (`seconds_total`: fetch, decode, model, measure, write). --in-process also
times shared.domain.model.segmenter.Segmenter.segment on the same image in this process.
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


EMBEDDED_LOCATION_SETTINGS = {"NUCLEUS_DATA_DIR", "NUCLEUS_DATABASE_URL", "NUCLEUS_BROKER_URL", "NUCLEUS_S3_ENDPOINT"}


@dataclass
class Case:
    label: str
    path: Path
    e2e: list[float] = field(default_factory=list)
    upload: list[float] = field(default_factory=list)
    model: list[float] = field(default_factory=list)
    worker: list[float] = field(default_factory=list)
    in_process: list[float] = field(default_factory=list)


def pick_image(width: int, height: int) -> Path:
    from shared.domain.datasets.labelled import default_dsb_dir

    root = default_dsb_dir()
    with (root / "index.csv").open(newline="") as fh:
        ids = sorted(r["image_id"] for r in csv.DictReader(fh) if int(r["width"]) == width and int(r["height"]) == height)
    if not ids:
        raise SystemExit(f"no {width}x{height} image in {root}")
    return root / "images" / f"{ids[0]}.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def embedded_stack(workers: int):
    """`nucleus up` on a temporary data directory; yields (url, admin token)."""
    nucleus = Path(sys.executable).parent / "nucleus"
    data_dir = Path(tempfile.mkdtemp(prefix="nucleus-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The embedded default: where things live is ours to set; other settings (weights, device) pass through.
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_LOCATION_SETTINGS}
    env.update(NUCLEUS_DATA_DIR=str(data_dir), NUCLEUS_WORKER_PROCESSES=str(workers))
    log = open(data_dir / "up.log", "wb")
    process = subprocess.Popen([str(nucleus), "up", "--port", str(port), "--data-dir", str(data_dir)], env=env,
                               cwd=data_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise SystemExit(f"nucleus up exited; see {log.name}")
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # refused or slow while it starts
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"nucleus up not healthy after 180 s; see {log.name}")
            time.sleep(0.5)
        out = subprocess.run([str(nucleus), "token", "create", "--name", "bench", "--role", "admin",
                              "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, check=True)
        yield url, out.stdout.strip().splitlines()[-1]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


class Api:
    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, f"{self.url}/api/v1{path}", timeout=120, **kwargs)
        response.raise_for_status()
        return response.json()

    def one_round(self, image: Path, poll: float) -> tuple[float, float, dict]:
        """Upload `image` into a new experiment; return (upload s, upload-to-result s, result JSON)."""
        experiment = f"bench-{uuid.uuid4().hex[:10]}"
        self.call("POST", "/experiments", json={"name": experiment})
        data = image.read_bytes()
        started = time.perf_counter()
        accepted = self.call("POST", f"/experiments/{experiment}/images", files=[("file", (image.name, data))])
        uploaded = time.perf_counter() - started
        entry = accepted["images"][0]
        while True:
            status = self.call("GET", f"/jobs/{entry['job_id']}")["status"]
            if status in ("done", "failed"):
                break
            time.sleep(poll)
        if status == "failed":
            raise SystemExit(f"job {entry['job_id']} failed on {image.name}")
        result = self.call("GET", f"/images/{entry['id']}/result")
        return uploaded, time.perf_counter() - started, result


def time_in_process(cases: list[Case], repeats: int) -> None:
    from shared.infra.settings import get_settings
    from shared.domain.imaging.imageio import decode
    from shared.domain.model.segmenter import Segmenter

    segmenter = Segmenter(weights=get_settings().weights_path)
    for case in cases:
        image = decode(case.path.read_bytes())
        segmenter.segment(image)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            segmenter.segment(image)
            case.in_process.append(time.perf_counter() - started)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def report(cases: list[Case]) -> str:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.3f}" if values else "-"

    header = ["image", "n", "upload s", "upload→result median s", "p95 s", "worker s", "model s", "model share",
              "in-process model s"]
    rows = [header]
    for case in cases:
        shares = [m / e for m, e in zip(case.model, case.e2e) if e > 0]
        rows.append([case.label, str(len(case.e2e)), cell(case.upload), cell(case.e2e),
                     f"{p95(case.e2e):.3f}" if case.e2e else "-", cell(case.worker), cell(case.model),
                     f"{statistics.median(shares):.0%}" if shares else "-", cell(case.in_process)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=10, help="uploads per image size (default 10)")
    parser.add_argument("--url", help="a running stack (default: start `nucleus up` on a temporary directory)")
    parser.add_argument("--token", help="a token that may upload, with --url")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the stack this starts")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between job status polls")
    parser.add_argument("--in-process", action="store_true", help="also time the model alone in this process")
    args = parser.parse_args()
    if bool(args.url) != bool(args.token):
        parser.error("--url and --token go together")

    cases = [Case("256x256", pick_image(256, 256)), Case("1024x1024", pick_image(1024, 1024))]
    stack = contextmanager(lambda: (yield (args.url, args.token)))() if args.url else embedded_stack(args.workers)
    with stack as (url, token):
        api = Api(url, token)
        for case in cases:
            api.one_round(case.path, args.poll)  # warm-up: the worker loads its model on first use
            for _ in range(args.rounds):
                uploaded, e2e, result = api.one_round(case.path, args.poll)
                case.upload.append(uploaded)
                case.e2e.append(e2e)
                if result.get("seconds_model") is not None:
                    case.model.append(result["seconds_model"])
                if result.get("seconds_total") is not None:
                    case.worker.append(result["seconds_total"])
            print(f"{case.label}: {len(case.e2e)} rounds done", file=sys.stderr)
    if args.in_process or any(not case.model for case in cases):
        time_in_process(cases, max(3, min(args.rounds, 10)))
    print(f"nucleus latency, {'stack at ' + args.url if args.url else 'embedded default'}, "
          f"{os.cpu_count()} CPUs, sequential uploads")
    print(report(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
