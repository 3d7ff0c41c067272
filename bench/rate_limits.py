"""What the rate limits and the sign-in throttle cost a request: the API in this process (Flask's test client,
SQLite and the local store in a temporary data directory), `-n` requests per row, median and p95 in ms.

    .venv/bin/python bench/rate_limits.py -n 500
    .venv/bin/python bench/rate_limits.py -n 500 --redis redis://127.0.0.1:6379/15   # counts kept in Redis

Rows: a limited route answered cheaply (a label upload for an image that does not exist: 404, and every label
upload counts) with its limit off and on, an unlimited read for comparison, and unknown tokens (401 until the
throttle answers 429).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


HUGE = "1000000/minute"  # on, but never reached


def timed(call, n: int) -> tuple[float, float, set[int]]:
    seconds, statuses = [], set()
    for _ in range(n):
        start = time.perf_counter()
        response = call()
        response.get_data()
        response.close()
        seconds.append(time.perf_counter() - start)
        statuses.add(response.status_code)
    seconds.sort()
    return statistics.median(seconds) * 1000, seconds[int(0.95 * (len(seconds) - 1))] * 1000, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="requests per row (default 200)")
    parser.add_argument("--redis", help="a Redis URL: keep the counts there, as production does")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="nucleus-bench-limits-"))
    os.environ["NUCLEUS_DATA_DIR"] = str(data_dir)
    from services.api import create_app
    from shared.infra.auth import create_token
    from shared.infra.settings import reload_settings
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.session import session_scope

    settings = reload_settings()
    upgrade()
    with session_scope() as session:
        token = create_token(session, "bench", "admin")
    headers = {"Authorization": f"Bearer {token}"}
    extra = {"broker_url": args.redis} if args.redis else {}

    def app(**update):
        return create_app(settings.model_copy(update={**extra, **update})).test_client()

    client = app()
    label = "/api/v1/images/no-such-image/labels"
    unknown = {"Authorization": "Bearer nuc_unknown-token"}
    rows = [
        ("label upload (404), limit off", app(label_upload_rate=""), "POST", label, headers),
        ("label upload (404), limit on", app(label_upload_rate=HUGE), "POST", label, headers),
        ("experiment list (no limit)", client, "GET", "/api/v1/experiments", headers),
        ("unknown token, throttle off", app(auth_failure_limit=""), "GET", "/api/v1/experiments", unknown),
        ("unknown token, throttle on", app(auth_failure_limit="10/minute"), "GET", "/api/v1/experiments", unknown),
    ]
    print(f"{args.n} requests per row; counts in {'Redis' if args.redis else 'memory'}; data in {data_dir}")
    print(f"{'request':32} {'median ms':>10} {'p95 ms':>8}  statuses")
    for name, test_client, method, path, request_headers in rows:
        median, p95, statuses = timed(lambda: test_client.open(path, method=method, headers=request_headers), args.n)
        print(f"{name:32} {median:10.2f} {p95:8.2f}  {sorted(statuses)}")


if __name__ == "__main__":
    main()
