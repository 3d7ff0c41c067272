#!/usr/bin/env python3
"""Load: N distinct images uploaded concurrently over HTTP to a running stack, then throughput,
latencies, queue depth over time, CPU use and the pipeline overhead for a 512x512 image.

    .venv/bin/python bench/load.py [--images 200] [--workers 1,2] [--stack embedded|prod]
                                   [--concurrency 8] [--overhead-rounds 5] [--out bench/results]
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --token $TOKEN --images 200

Without --url it starts a fresh stack per worker count: `nucleus up` on a temporary data directory
(embedded: SQLite, local objects, file-system broker) or, with --stack prod, gunicorn + Celery workers
+ sweeper on a throwaway Redis, a throwaway PostgreSQL and moto (testkit/stack_prod.py).
Images are random 64..256 px crops of real DSB2018 images (distinct bytes: no duplicates).

The stacks it starts run without the upload rate limit (`NUCLEUS_UPLOAD_RATE_PER_MINUTE=0`): it
measures the pipeline, not the limiter; against --url a 429 is retried after its Retry-After.

Figures: uploads/s accepted (first POST to last 2xx), images/s completed (first POST to last result),
p50/p95/p99 of the upload POST and of upload->result (POST start to the result row's `created`),
queue depth and open jobs sampled from /metrics every 0.5 s (PNG plot next to the report), CPU from
/proc: the whole machine's busy share and the stack's own CPU seconds. Overhead: one 512x512 image at
a time on the idle stack, (upload->result) / (Segmenter.segment on the same image in this process,
same torch threads as one worker), median over rounds; target <= 1.3.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]

from shared.domain.datasets.labelled import default_dsb_dir
from testkit.crops import crops, fixed_size_crop
from testkit.http import Client


# --- CPU from /proc ----------------------------------------------------------------------------

def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def tree_cpu_seconds(sessions: set[int]) -> float:
    """CPU seconds (user + system, children reaped included) of every process in these sessions."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parts = stat[stat.rindex(")") + 2:].split()
        if int(parts[3]) in sessions:  # field 6: session id
            total += sum(int(v) for v in parts[11:15]) / ticks  # utime stime cutime cstime
    return total


# --- stacks -------------------------------------------------------------------------------------

class Target:
    url: str
    token: str
    sessions: set[int]

    def stop(self) -> None:
        pass


class EmbeddedTarget(Target):
    def __init__(self, workers: int):
        from testkit.stack import EmbeddedStack

        self.stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="nucleus-load-")), worker_processes=workers,
                                   upload_rate_per_minute=0)
        self.stack.start()
        self.url, self.token = self.stack.url, self.stack.token
        self.sessions = {self.stack.process.pid}

    def stop(self) -> None:
        self.stack.stop()


class ProdTarget(Target):
    def __init__(self, workers: int):
        from testkit.stack_prod import ProdStack

        self.stack = ProdStack(Path(tempfile.mkdtemp(prefix="nucleus-load-prod-")), workers=workers,
                               lease_seconds=300, settings={"upload_rate_per_minute": 0}).start()
        self.url, self.token = self.stack.url, self.stack.token
        self.sessions = {s.process.pid for s in self.stack.services}  # the services, not Redis/PostgreSQL/moto

    def stop(self) -> None:
        self.stack.stop()


class RunningTarget(Target):
    def __init__(self, url: str, token: str):
        self.url, self.token, self.sessions = url, token, set()


# --- measurement --------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def parse_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Upload:
    name: str
    started: float = 0.0
    latency: float = 0.0
    image_id: str | None = None
    retries: int = 0


@dataclass
class RunResult:
    label: str
    workers: int
    images: int
    uploads: list[Upload] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    model: list[float] = field(default_factory=list)
    worker: list[float] = field(default_factory=list)
    failed: int = 0
    upload_span: float = 0.0
    complete_span: float = 0.0
    cpu_machine: float = 0.0
    cpu_stack_seconds: float = 0.0
    samples: list[tuple[float, float | None, float | None]] = field(default_factory=list)  # t, depth, open
    overhead: dict = field(default_factory=dict)


def scrape(url: str) -> tuple[float | None, float | None]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = requests.get(f"{url}/metrics", timeout=5).text
    except requests.RequestException:
        return None, None
    depth, open_jobs = None, 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "nucleus_queue_depth" and s.labels.get("queue") == "segment":
                depth = s.value
            if s.name == "nucleus_jobs" and s.labels.get("state") in ("queued", "running"):
                open_jobs += s.value
    return depth, open_jobs


def upload_one(client: Client, experiment: str, item: tuple[str, bytes]) -> Upload:
    name, data = item
    record = Upload(name)
    record.started = time.time()
    while True:
        t0 = time.perf_counter()
        response = client.upload(experiment, [(name, data)])
        if response.status_code in (429, 503):  # rate limited / a dependency briefly out: retry as told
            record.retries += 1
            time.sleep(float(response.headers.get("Retry-After", 1)))
            continue
        response.raise_for_status()
        record.latency = time.time() - record.started if record.retries else time.perf_counter() - t0
        record.image_id = response.json()["images"][0]["id"]
        return record


def count_finished(client: Client, experiment: str) -> tuple[int, int]:
    done, failed = (client.get(f"/api/v1/experiments/{experiment}/results",
                               params={"status": s, "per_page": 1}).json()["total"] for s in ("done", "failed"))
    return done, failed


def run_load(target: Target, label: str, workers: int, n: int, concurrency: int, seed: int) -> RunResult:
    client = Client(target.url, target.token, timeout=120)
    experiment = f"load-{uuid.uuid4().hex[:8]}"
    client.create_experiment(experiment).raise_for_status()
    items = crops(n, seed=seed, root=default_dsb_dir())
    result = RunResult(label, workers, n)
    stop = threading.Event()
    t_start = time.time()

    def sampler():
        while not stop.is_set():
            depth, open_jobs = scrape(target.url)
            result.samples.append((time.time() - t_start, depth, open_jobs))
            stop.wait(0.5)

    threading.Thread(target=sampler, daemon=True).start()
    cpu0, stack0 = machine_cpu(), tree_cpu_seconds(target.sessions)
    with ThreadPoolExecutor(concurrency) as pool:
        result.uploads = list(pool.map(lambda item: upload_one(client.with_token(target.token), experiment, item),
                                       items))
    result.upload_span = max(u.started + u.latency for u in result.uploads) - t_start
    while True:
        done, failed = count_finished(client, experiment)
        if done + failed >= n:
            break
        time.sleep(0.25)
    cpu1, stack1 = machine_cpu(), tree_cpu_seconds(target.sessions)
    stop.set()
    result.failed = failed
    result.cpu_machine = (cpu1[0] - cpu0[0]) / max(1e-9, cpu1[1] - cpu0[1])
    result.cpu_stack_seconds = stack1 - stack0
    last = t_start
    for upload in result.uploads:
        response = client.get(f"/api/v1/images/{upload.image_id}/result")
        if response.status_code != 200:
            continue
        body = response.json()
        finished = parse_time(body["created"])
        last = max(last, finished)
        result.e2e.append(finished - upload.started)
        result.model.append(body["seconds_model"])
        result.worker.append(body["seconds_total"])
    result.complete_span = last - t_start
    return result


def measure_overhead(target: Target, workers: int, rounds: int) -> dict:
    """One 512x512 image at a time on the idle stack vs the model alone in this process."""
    import torch

    from shared.domain.imaging.imageio import decode
    from shared.domain.model.segmenter import Segmenter

    client = Client(target.url, target.token, timeout=120)
    name, data = fixed_size_crop(512, root=default_dsb_dir())
    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    segmenter = Segmenter()
    image = decode(data)
    segmenter.segment(image)  # warm-up
    alone, e2e, model = [], [], []
    for i in range(rounds + 1):
        experiment = f"overhead-{uuid.uuid4().hex[:8]}"  # same bytes, new experiment: a new job each round
        client.create_experiment(experiment).raise_for_status()
        started = time.time()
        row = client.upload(experiment, [(name, data)]).json()["images"][0]
        # e2e comes from the result row's own timestamp, so polling gently only delays the next round
        # and keeps this process from competing with the worker for the CPU
        client.wait_job(row["job_id"], timeout=300, interval=0.1)
        body = client.get(f"/api/v1/images/{row['id']}/result").json()
        t0 = time.perf_counter()
        segmenter.segment(image)
        if i == 0:
            continue  # warm-up round
        alone.append(time.perf_counter() - t0)
        e2e.append(parse_time(body["created"]) - started)
        model.append(body["seconds_model"])
    ratios = [a / b for a, b in zip(e2e, alone)]
    return {"e2e": statistics.median(e2e), "alone": statistics.median(alone), "worker_model": statistics.median(model),
            "ratio": statistics.median(ratios), "ratio_vs_worker_model": statistics.median(
                [a / b for a, b in zip(e2e, model)]), "threads": threads, "rounds": rounds}


# --- report -------------------------------------------------------------------------------------

def table(results: list[RunResult]) -> str:
    rows = [("", *[f"{r.label}, {r.workers} worker{'s' * (r.workers > 1)}" for r in results])]

    def add(name, fn):
        def cell(r):
            try:
                return fn(r)
            except (ZeroDivisionError, KeyError, ValueError, statistics.StatisticsError):
                return "-"  # e.g. an overhead-only run (--images 0)
        rows.append((name, *[cell(r) for r in results]))

    add("images (failed)", lambda r: f"{r.images} ({r.failed})")
    add("uploads/s accepted", lambda r: f"{r.images / r.upload_span:.1f}")
    add("images/s completed", lambda r: f"{len(r.e2e) / r.complete_span:.2f}")
    for q in (0.5, 0.95, 0.99):
        add(f"upload p{int(q * 100)} s", lambda r, q=q: f"{percentile([u.latency for u in r.uploads], q):.3f}")
    for q in (0.5, 0.95, 0.99):
        add(f"upload->result p{int(q * 100)} s", lambda r, q=q: f"{percentile(r.e2e, q):.2f}")
    add("worker task median s", lambda r: f"{statistics.median(r.worker):.3f}" if r.worker else "-")
    add("model median s", lambda r: f"{statistics.median(r.model):.3f}" if r.model else "-")
    add("max queue depth", lambda r: f"{max((d for _, d, _ in r.samples if d is not None), default=float('nan')):.0f}")
    add("machine CPU busy", lambda r: f"{100 * r.cpu_machine:.0f}%")
    add("stack CPU s (per image)", lambda r: f"{r.cpu_stack_seconds:.0f} ({r.cpu_stack_seconds / r.images:.2f})")
    add("upload retries (503)", lambda r: str(sum(u.retries for u in r.uploads)))
    add("512x512 upload->result s", lambda r: f"{r.overhead['e2e']:.2f}" if r.overhead else "-")
    add("512x512 model alone s", lambda r: f"{r.overhead['alone']:.2f} ({r.overhead['threads']} thr)"
        if r.overhead else "-")
    add("512x512 worker's model s", lambda r: f"{r.overhead['worker_model']:.2f}" if r.overhead else "-")
    add("overhead (target <= 1.3)", lambda r: f"{r.overhead['ratio']:.2f}" if r.overhead else "-")
    add("  vs the worker's model s", lambda r: f"{r.overhead['ratio_vs_worker_model']:.2f}" if r.overhead else "-")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))) for row in rows)


def plot(results: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        t = [s[0] for s in r.samples if s[1] is not None]
        ax.plot(t, [s[1] for s in r.samples if s[1] is not None], label=f"queue depth, {r.workers}w ({r.label})")
        t_open = [s[0] for s in r.samples if s[2] is not None]
        ax.plot(t_open, [s[2] for s in r.samples if s[2] is not None], linestyle="--",
                label=f"open jobs, {r.workers}w")
    ax.set_xlabel("seconds since the first upload")
    ax.set_ylabel("messages / jobs")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", "-n", type=int, default=200)
    parser.add_argument("--workers", default="1,2", help="worker process counts to run, e.g. 1,2")
    parser.add_argument("--stack", choices=["embedded", "prod"], default="embedded")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--overhead-rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = []
    worker_counts = [int(w) for w in args.workers.split(",")] if not args.url else [0]
    for workers in worker_counts:
        if args.url:
            target = RunningTarget(args.url, args.token)
        else:
            print(f"starting a {args.stack} stack with {workers} worker(s)...", file=sys.stderr)
            target = (ProdTarget if args.stack == "prod" else EmbeddedTarget)(workers)
        try:
            label = args.stack if not args.url else "running"
            result = (run_load(target, label, workers or 1, args.images, args.concurrency, seed=workers)
                      if args.images else RunResult(label, workers or 1, 0))
            if args.overhead_rounds:
                result.overhead = measure_overhead(target, workers or 1, args.overhead_rounds)
            results.append(result)
        finally:
            target.stop()
    report = table(results)
    cpus = os.cpu_count()
    load = Path("/proc/loadavg").read_text().split()[:3]
    header = (f"nucleus load, {args.images} images, concurrency {args.concurrency}, {args.stack} stack, "
              f"{cpus} CPUs, load average at the end {' '.join(load)}\n"
              "The CPU is shared: other processes (e.g. a training run) compete for it during the run.\n")
    text = header + "\n" + report + "\n"
    print(text)
    (args.out / f"load-{args.stack}-{stamp}.txt").write_text(text)
    plot(results, args.out / f"load-{args.stack}-{stamp}.png")
    (args.out / f"load-{args.stack}-{stamp}.json").write_text(json.dumps(
        [{"label": r.label, "workers": r.workers, "images": r.images, "failed": r.failed,
          "upload_span": r.upload_span, "complete_span": r.complete_span, "e2e": r.e2e, "model": r.model,
          "upload_latency": [u.latency for u in r.uploads], "samples": r.samples, "overhead": r.overhead,
          "cpu_machine": r.cpu_machine, "cpu_stack_seconds": r.cpu_stack_seconds} for r in results], indent=1))
    print(f"report, plot and raw figures: {args.out}/load-{args.stack}-{stamp}.*", file=sys.stderr)


if __name__ == "__main__":
    main()
