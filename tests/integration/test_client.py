"""nucleus.client.Client against the real API app served over HTTP (SQLite, the local object store,
the file-system broker; jobs finished the way a worker finishes them), and against a tiny server that
answers 429/503 with Retry-After."""
from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from nucleus.client import ApiError, Client, ServerUnreachable, read_token
from testkit.api import nuclei_image, png_bytes
from testkit.net import free_port
from testkit.served import served_api


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The API app over HTTP, with a one-per-minute export limit."""
    with served_api(tmp_path_factory.mktemp("client"), export_rate="1/minute") as harness:
        yield harness


@pytest.fixture(scope="module")
def api(served) -> Client:
    return Client(served.http_url, served.token("admin"), retries=0)


def two_channel_ome_tiff() -> bytes:
    import tifffile

    rng = np.random.default_rng(3)
    stack = rng.integers(0, 30, (2, 48, 48), dtype=np.uint16)
    stack[0, 10:20, 10:20] = 900
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, stack, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["Hoechst", "EdU"]}})
    return buffer.getvalue()


def test_experiments_are_created_listed_and_paged(api):
    created = api.create_experiment("client-a")
    assert created["name"] == "client-a" and created["project"] == "default"
    with pytest.raises(ApiError) as refused:
        api.create_experiment("client-a")
    assert refused.value.status == 409 and refused.value.message
    assert api.create_experiment("client-a", exist_ok=True)["id"] == created["id"]
    for n in range(3):
        api.create_experiment(f"client-page-{n}")
    assert api.experiments(per_page=2)["per_page"] == 2
    names = [e["name"] for e in api.iter_experiments(per_page=2)]
    assert {"client-a", "client-page-0", "client-page-1", "client-page-2"} <= set(names)
    assert len(names) == len(set(names))


def test_upload_with_metadata_result_downloads_and_tables(api, served):
    api.create_experiment("client-results")
    images = api.upload("client-results", [("a.png", nuclei_image(1)), ("b.png", nuclei_image(2))],
                        condition="dmso", well="B03", plate="P1", site=2, operator="ana")
    assert [i["duplicate"] for i in images] == [False, False]
    again = api.upload("client-results", ("a-copy.png", nuclei_image(1)))
    assert again[0]["duplicate"] is True and again[0]["id"] == images[0]["id"]

    image = api.image(images[0]["id"])
    assert (image["condition"], image["well"], image["plate"], image["site"]) == ("dmso", "B03", "P1", "2")
    with pytest.raises(ApiError) as not_ready:
        api.result(images[0]["id"])
    assert not_ready.value.status == 409
    served.finish(images[0]["job_id"], count=4)
    assert api.job(images[0]["job_id"])["status"] == "done"
    result = api.wait_for_result(images[0]["id"], timeout=5)
    assert result["count"] == 4
    assert api.download(images[0]["id"], "nuclei.csv").startswith(b"label,area")
    assert api.download(images[0]["id"], "labels.tif")[:2] in (b"II", b"MM")

    served.fail(images[1]["job_id"], "the worker gave up")
    with pytest.raises(ApiError) as failed:
        api.wait_for_result(images[1]["id"], timeout=30)  # raised at once, not after the timeout
    assert failed.value.status == 409 and failed.value.code == "job_failed"

    rows = list(api.iter_results("client-results", per_page=1))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done", "failed"}
    assert api.results("client-results", status="done")["total"] == 1
    table = api.table("client-results", "nuclei.csv").decode()
    assert table.splitlines()[0].startswith("image_id") and len(table.splitlines()) == 5


def test_the_nuclear_channel_by_name_goes_with_the_upload(api):
    api.create_experiment("client-channels")
    image = api.upload("client-channels", ("two.ome.tif", two_channel_ome_tiff()), channel="hoechst")[0]
    assert api.image(image["id"])["channel"] == 0
    with pytest.raises(ApiError) as unknown:
        api.upload("client-channels", ("two-again.ome.tif", two_channel_ome_tiff()), channel="DAPI")
    assert unknown.value.status == 400
    assert "Hoechst" in unknown.value.message and "EdU" in unknown.value.message


def test_refusals_carry_the_servers_code_and_message(api, served):
    with pytest.raises(ApiError) as missing:
        api.experiment("no-such-experiment")
    assert missing.value.status == 404 and missing.value.code == "experiment_not_found"
    assert "no-such-experiment" in missing.value.message
    api.create_experiment("client-bad")
    with pytest.raises(ApiError) as bad:
        api.upload("client-bad", ("notes.png", b"this is not an image"))
    assert bad.value.status == 400 and bad.value.message and "notes.png" in str(bad.value)
    viewer = Client(served.http_url, served.token("viewer"), retries=0)
    with pytest.raises(ApiError) as forbidden:
        viewer.create_experiment("client-viewer")
    assert forbidden.value.status == 403
    with pytest.raises(ApiError) as unknown:
        Client(served.http_url, "not-a-token", retries=0).experiments()
    assert unknown.value.status == 401
    with pytest.raises(ServerUnreachable):
        Client(f"http://127.0.0.1:{free_port()}", "x", retries=0).experiments()


def test_an_export_over_its_rate_limit_raises_429_with_retry_after(served):
    api = Client(served.http_url, served.token("admin"), retries=1, max_wait=0.1)
    api.create_experiment("client-limited")
    api.table("client-limited", "nuclei.csv")
    started = time.monotonic()
    with pytest.raises(ApiError) as limited:
        api.table("client-limited", "nuclei.csv")  # refused, waited 0.1 s (capped), refused again
    assert limited.value.status == 429 and 0 < limited.value.retry_after <= 60
    assert time.monotonic() - started >= 0.1


def test_labels_training_runs_and_models(api, served):
    api.create_experiment("client-labels")
    image = api.upload("client-labels", ("c.png", nuclei_image(5)))[0]
    labels = np.zeros((64, 64), np.uint16)
    labels[5:15, 5:15], labels[30:40, 30:44] = 1, 2
    label = api.upload_labels(image["id"], ("c_labels.png", png_bytes(labels)))
    assert label["count"] == 2 and label["image_id"] == image["id"]
    assert [item["id"] for item in api.labels(image["id"])["labels"]] == [label["id"]]
    assert api.experiment_labels("client-labels")["labels"][0]["id"] == label["id"]

    run_id = api.start_training(epochs=1, force_promote=True)
    run = api.training_run(run_id)
    assert run["status"] == "queued" and run["version"] is None
    assert run_id in [r["id"] for r in api.training_runs()["training_runs"]]
    assert "models" in api.models(project="default")
    with pytest.raises(ApiError) as bad_run:
        api.start_training(epochs=0)
    assert bad_run.value.status == 400
    assert "/experiments" in api.openapi()["paths"]


class Busy(BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 1) then 429 (an HTTP date) then the experiment list."""
    times: list[float] = []

    def do_GET(self):
        Busy.times.append(time.monotonic())
        n = len(Busy.times)
        if n == 1:
            self._answer(503, b'{"error": {"code": "database_unavailable", "message": "down"}}', {"Retry-After": "1"})
        elif n == 2:
            from email.utils import formatdate
            self._answer(429, b'{"error": {"code": "rate_limited", "message": "slow down"}}',
                         {"Retry-After": formatdate(time.time() + 1, usegmt=True)})
        else:
            self._answer(200, b'{"experiments": [], "total": 0, "page": 1, "per_page": 50}', {})

    def _answer(self, status, body, headers):
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_retry_after_is_waited_out_on_503_and_429():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        Busy.times = []
        api = Client(f"http://127.0.0.1:{server.server_port}", "t", retries=2)
        assert api.experiments()["total"] == 0
        assert len(Busy.times) == 3
        assert Busy.times[1] - Busy.times[0] >= 0.95  # Retry-After: 1
        assert Busy.times[2] - Busy.times[1] >= 0.0   # an HTTP date about 1 s ahead (whole seconds)
        Busy.times = []
        with pytest.raises(ApiError) as refused:
            Client(f"http://127.0.0.1:{server.server_port}", "t", retries=0).experiments()
        assert refused.value.status == 503 and refused.value.retry_after == 1 and refused.value.message == "down"
    finally:
        server.shutdown()


def test_the_token_comes_from_the_argument_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("NUCLEUS_TOKEN", raising=False)
    with pytest.raises(ValueError):
        Client("http://127.0.0.1:1")
    monkeypatch.setenv("NUCLEUS_TOKEN", "from-env")
    assert Client("http://127.0.0.1:1").session.headers["Authorization"] == "Bearer from-env"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert read_token(token_file=token_file) == "from-file"
    assert read_token("given", token_file) == "given"
    token_file.write_text("\n")
    with pytest.raises(ValueError):
        read_token(token_file=token_file)


def test_the_client_and_the_ingester_import_nothing_of_the_server():
    """They run on instrument PCs and notebooks: requests, numpy and tifffile, no services/ or shared/."""
    import subprocess
    import sys

    code = ("import sys, nucleus.client, nucleus.ingest.runner, nucleus.commands.ingest; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'services', 'shared', 'flask', 'sqlalchemy', "
            "'torch', 'celery'}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
