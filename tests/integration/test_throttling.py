"""Throttling and rate limits (Flask-Limiter): failed sign-ins and unknown bearer tokens per client address
and per token prefix, and per-token limits on the heavy routes (label uploads, exports, plots, training
runs), each answered 429 with Retry-After, never slowing a valid token or another token."""
from __future__ import annotations

import io

import pytest

from testkit.api import csrf_from, nuclei_image


def make_app(harness, **settings):
    from services.api import create_app

    app = create_app(harness.settings.model_copy(update=settings))
    app.config["TESTING"] = True
    return app


def from_address(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def bearer(client, token: str, path: str = "/api/v1/experiments"):
    return read(client.get(path, headers={"Authorization": f"Bearer {token}"}))


def read(response):
    """The response, read to its end and closed (exports stream)."""
    response.get_data()
    response.close()
    return response


def assert_throttled(response, code: str, longest: int = 60):
    assert response.status_code == 429, response.status_code
    assert response.json["error"]["code"] == code
    assert 1 <= int(response.headers["Retry-After"]) <= longest


# --- failed sign-ins and unknown tokens ---------------------------------------------------------

def test_unknown_bearer_tokens_are_throttled_per_address(harness):
    app = make_app(harness, auth_failure_limit="3/minute")
    guesser, neighbour = from_address(app, "10.0.0.1"), from_address(app, "10.0.0.2")
    valid = harness.token("viewer")
    for i in range(3):
        assert bearer(guesser, f"nuc_guess{i}-abcdef").status_code == 401
    assert_throttled(bearer(guesser, "nuc_guess9-abcdef"), "too_many_failures")
    assert bearer(guesser, valid).status_code == 200  # a valid token is never slowed
    assert bearer(neighbour, "nuc_other0-abcdef").status_code == 401  # another address has its own count
    for _ in range(3):
        assert bearer(neighbour, valid).status_code == 200  # successes count for nothing


def test_one_token_prefix_is_throttled_from_any_address(harness):
    app = make_app(harness, auth_failure_limit="3/minute")
    stem = "nuc_SAMEPFX1"
    for i in range(3):
        assert bearer(from_address(app, f"10.1.0.{i}"), f"{stem}-try{i}").status_code == 401
    assert_throttled(bearer(from_address(app, "10.1.0.9"), f"{stem}-try9"), "too_many_failures")
    assert bearer(from_address(app, "10.1.0.9"), "nuc_DIFFERENT-try").status_code == 401


def test_behind_a_trusted_proxy_the_forwarded_address_counts(harness):
    app = make_app(harness, auth_failure_limit="2/minute", trusted_proxies=1)
    proxy = from_address(app, "10.4.0.1")

    def via_proxy(client_address: str, token: str):
        return read(proxy.get("/api/v1/experiments", headers={"Authorization": f"Bearer {token}",
                                                               "X-Forwarded-For": client_address}))

    for i in range(2):
        assert via_proxy("198.51.100.7", f"nuc_fwd{i}-guess").status_code == 401
    assert via_proxy("198.51.100.7", "nuc_fwd9-guess").status_code == 429
    assert via_proxy("198.51.100.8", "nuc_other-guess").status_code == 401  # another client behind the same proxy

    direct = make_app(harness, auth_failure_limit="2/minute")  # no trusted proxy: the header is ignored
    spoofer = from_address(direct, "10.4.0.2")
    statuses = [spoofer.get("/api/v1/experiments", headers={"Authorization": f"Bearer nuc_spoof{i}-x",
                                                            "X-Forwarded-For": f"203.0.113.{i}"}).status_code
                for i in range(3)]
    assert statuses == [401, 401, 429]


def test_failed_sign_ins_are_throttled(harness):
    app = make_app(harness, auth_failure_limit="2/minute")
    client = from_address(app, "10.2.0.1")
    csrf = csrf_from(client.get("/login").data)
    for i in range(2):
        assert client.post("/login", data={"token": f"nuc_wrong{i}", "csrf_token": csrf}).status_code == 401
    refused = client.post("/login", data={"token": "nuc_wrong9", "csrf_token": csrf})
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert b"too many failed sign-ins" in refused.data
    signed_in = client.post("/login", data={"token": harness.token("viewer"), "csrf_token": csrf, "next": "/"})
    assert signed_in.status_code == 303 and client.get("/").status_code == 200


def test_the_default_allows_a_few_mistakes(harness):
    app = make_app(harness)
    limit, _, _ = harness.settings.auth_failure_limit.partition("/")
    client = from_address(app, "10.3.0.1")
    for i in range(int(limit)):
        assert bearer(client, f"nuc_typo{i:04d}").status_code == 401
    assert bearer(client, "nuc_typo9999").status_code == 429


# --- heavy routes -------------------------------------------------------------------------------

def test_every_heavy_route_is_limited(harness):
    from services.api.limits import HEAVY_ROUTES

    app = make_app(harness)
    for setting, endpoints in HEAVY_ROUTES.items():
        assert getattr(harness.settings, setting), setting
        for endpoint in endpoints:
            assert endpoint in app.view_functions, endpoint
            assert app.view_functions[endpoint] is not harness.app.view_functions[endpoint]  # wrapped per app


def sign_in(app, token):
    client = app.test_client()
    client.post("/login", data={"token": token, "csrf_token": csrf_from(client.get("/login").data)})
    return client, csrf_from(client.get("/").data)


def test_exports_are_limited_per_token_across_api_and_pages(harness, admin, experiment):
    app = make_app(harness, export_rate="3/minute")
    token, other = harness.token("viewer"), harness.token("viewer")
    api = app.test_client()
    for path in (f"/api/v1/experiments/{experiment}/nuclei.csv", f"/api/v1/experiments/{experiment}/nuclei.parquet"):
        assert bearer(api, token, path).status_code == 200
    page, _ = sign_in(app, token)
    assert read(page.get(f"/experiments/{experiment}/results.csv")).status_code == 200
    assert_throttled(bearer(api, token, f"/api/v1/experiments/{experiment}/nuclei.csv"), "rate_limited")
    refused = read(page.get(f"/experiments/{experiment}/nuclei.csv"))
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert bearer(api, other, f"/api/v1/experiments/{experiment}/nuclei.csv").status_code == 200  # its own budget
    results = f"/api/v1/experiments/{experiment}/results"
    assert bearer(api, token, results).status_code == 200  # a page of results is no export
    assert_throttled(bearer(api, token, results + "?format=csv"), "rate_limited")


def test_plots_are_limited(harness, experiment):
    app = make_app(harness, plot_rate="2/minute")
    client, _ = sign_in(app, harness.token("viewer"))
    for _ in range(2):
        assert client.get(f"/experiments/{experiment}/plots/counts.png").status_code == 200
    refused = client.get(f"/experiments/{experiment}/plots/areas.png")
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60


def test_label_uploads_are_limited(harness, experiment):
    app = make_app(harness, label_upload_rate="2/minute")
    token = harness.token("uploader")
    client = app.test_client()

    def post_label():
        return client.post("/api/v1/images/no-such-image/labels", headers={"Authorization": f"Bearer {token}"},
                           data={"file": (io.BytesIO(nuclei_image(1)), "l.png")}, content_type="multipart/form-data")

    assert [post_label().status_code for _ in range(2)] == [404, 404]
    assert_throttled(post_label(), "rate_limited")


def test_training_runs_are_limited(harness):
    from shared.infra.db.tables import TrainingRun

    app = make_app(harness, training_run_rate="2/hour")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {harness.token('admin')}"}
    runs = harness.count(TrainingRun)
    for _ in range(3):  # refused requests start nothing and count for nothing
        assert client.post("/api/v1/training-runs", json={"epochs": "many"}, headers=headers).status_code == 400
    for _ in range(2):  # queued only: no trainer consumes the harness's queue
        assert client.post("/api/v1/training-runs", json={"epochs": 1}, headers=headers).status_code == 202
    assert_throttled(client.post("/api/v1/training-runs", json={"epochs": 1}, headers=headers), "rate_limited",
                     longest=3600)
    assert harness.count(TrainingRun) == runs + 2


def test_limits_are_shared_by_api_processes_through_redis(harness, experiment, redis_url):
    first, second = (make_app(harness, export_rate="2/minute", broker_url=redis_url) for _ in range(2))
    token = harness.token("viewer")
    path = f"/api/v1/experiments/{experiment}/nuclei.csv"
    assert bearer(first.test_client(), token, path).status_code == 200
    assert bearer(second.test_client(), token, path).status_code == 200
    assert_throttled(bearer(first.test_client(), token, path), "rate_limited")


def test_an_unreachable_redis_lets_requests_through(harness, experiment):
    app = make_app(harness, export_rate="1/minute", auth_failure_limit="1/minute", broker_url="redis://127.0.0.1:1/0")
    token = harness.token("viewer")
    for _ in range(3):
        assert bearer(app.test_client(), token, f"/api/v1/experiments/{experiment}/nuclei.csv").status_code == 200
        assert bearer(app.test_client(), "nuc_unknown-token").status_code == 401


@pytest.mark.parametrize("setting", ["export_rate", "auth_failure_limit"])
@pytest.mark.parametrize("value", ["often", "10/fortnight"])
def test_a_malformed_limit_stops_the_start(harness, setting, value):
    with pytest.raises(ValueError):
        make_app(harness, **{setting: value})


def test_the_benchmark_runs():
    """bench/rate_limits.py at a small size (its figures are for bench/README.md)."""
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "bench/rate_limits.py", "-n", "12"], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "label upload (404), limit on" in out and "[404]" in out
    assert "unknown token, throttle on" in out and "[401, 429]" in out
