"""/metrics on the API (open, Prometheus text) and on a worker process (NUCLEUS_WORKER_METRICS_PORT),
against a real `nucleus up`: after one image, the numbers reflect it."""
from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from testkit.http import Client
from testkit.net import free_port
from testkit.pipeline import weights_overrides
from testkit.stack import EmbeddedStack
from testkit.wait import wait_for


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(parsed: dict, name: str, **labels) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def metered_stack(tmp_path_factory):
    stack = EmbeddedStack(tmp_path_factory.mktemp("metrics"), worker_metrics_port=free_port(), **weights_overrides())
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def finished_result(metered_stack, dsb_samples):
    client = Client(metered_stack.url, metered_stack.token)
    assert client.create_experiment("metrics").status_code == 201
    [row] = client.upload("metrics", [dsb_samples[0].path]).json()["images"]
    assert client.wait_job(row["job_id"], timeout=180)["status"] == "done"
    return client.get(f"/api/v1/images/{row['id']}/result").json()


def test_api_metrics_are_open_and_count_the_pipeline(metered_stack, finished_result):
    response = requests.get(f"{metered_stack.url}/metrics", timeout=10)  # no token, like /healthz
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    parsed = samples(response.text)
    assert value(parsed, "nucleus_database_up") == 1
    assert value(parsed, "nucleus_jobs", state="done") >= 1
    assert value(parsed, "nucleus_jobs", state="failed") == 0
    assert value(parsed, "nucleus_queue_depth", queue="segment") is not None
    assert value(parsed, "nucleus_task_seconds_count") >= 1
    assert value(parsed, "nucleus_task_seconds_sum") >= finished_result["seconds_total"] * 0.99
    assert value(parsed, "nucleus_model_seconds_bucket", le="+Inf") >= 1
    assert value(parsed, "nucleus_model_info", version=finished_result["model_version"], role="latest_result") == 1
    assert value(parsed, "nucleus_model_info", version="shipped", role="active") == 1


def test_worker_serves_its_own_metrics(metered_stack, finished_result):
    port = int(metered_stack.env["NUCLEUS_WORKER_METRICS_PORT"]) + 1  # worker segment-1
    text = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, timeout=30)
    parsed = samples(text)
    assert value(parsed, "nucleus_worker_tasks_total", outcome="done") >= 1
    assert value(parsed, "nucleus_worker_task_seconds_count") >= 1
    assert value(parsed, "nucleus_worker_model_info", version=finished_result["model_version"]) == 1


def test_production_config_sends_events_for_flower():
    from shared.infra.settings import Settings
    from shared.infra.queue import celery_config

    config = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert config["worker_send_task_events"] and config["task_send_sent_event"]
