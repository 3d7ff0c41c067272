"""Fuzzing the upload endpoint of a running `nucleus up`: broken files, huge declared sizes, zero
bytes, wrong extensions, path-traversal and non-UTF-8 file names, non-UTF-8 metadata. Every request
gets a 2xx (the file happened to be a valid image) or a 4xx with a message — never a 5xx; afterwards
no job is stuck and no worker crashed.

Examples: NUCLEUS_FUZZ_EXAMPLES (default 60 here; the decoder fuzz runs 5x that in-process).
"""
from __future__ import annotations

import os
import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.fuzzdata import broken_files, hostile_filenames, hostile_text, png_declaring, seed_files

EXAMPLES = max(10, int(os.environ.get("NUCLEUS_FUZZ_EXAMPLES", "300")) // 5)
CONTENT_TYPES = [b"image/png", b"image/tiff", b"application/octet-stream", b"text/plain", b"\xff/\xfe"]


def multipart(parts: list[tuple[bytes, bytes | None, bytes | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body from raw bytes (requests insists on str names): parts are
    (field name, filename or None, content type or None, value)."""
    boundary = uuid.uuid4().hex.encode()
    body = b""
    for name, filename, content_type, value in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename.replace(b'"', b"%22") + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        if content_type is not None:
            body += b"Content-Type: " + content_type + b"\r\n"
        body += b"\r\n" + value + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary.decode()}"


@pytest.fixture(scope="module")
def fuzz_target(embedded_stack, stack_client):
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    assert stack_client.create_experiment(name).status_code == 201
    accepted: list[str] = []
    yield embedded_stack, stack_client, name, accepted
    # no stuck job, no crashed worker
    for job_id in accepted:
        job = stack_client.wait_job(job_id, timeout=180)
        assert job["status"] in ("done", "failed")
    assert "exited; restarting" not in embedded_stack.log_tail(100000), embedded_stack.log_tail()
    audit_embedded(embedded_stack.data_dir).assert_clean()


def audit_embedded(data_dir):
    from shared.infra.storage import LocalStore
    from testkit.audit import audit

    return audit(f"sqlite:///{data_dir / 'nucleus.db'}", LocalStore(data_dir / "objects"))


def post(stack_client, experiment: str, parts) -> requests.Response:
    body, content_type = multipart(parts)
    return stack_client.post(f"/api/v1/experiments/{experiment}/images", data=body,
                              headers={"Content-Type": content_type})


def check(response: requests.Response, accepted: list[str]) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code in (200, 201, 202):
        for row in response.json()["images"]:
            assert "/" not in row["filename"] and "\\" not in row["filename"] and row["filename"] not in (".", "..")
            accepted.append(row["job_id"])
        return
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert error["code"] and error["message"].strip(), response.text


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=broken_files(), filename=hostile_filenames, content_type=st.sampled_from(CONTENT_TYPES),
       metadata=st.dictionaries(st.sampled_from([b"condition", b"well", b"plate", b"site", b"channel",
                                                 b"pixel_size_um", b"instrument", b"Bad-Name", b"\xff"]),
                                hostile_text, max_size=3))
def test_hostile_uploads_get_a_4xx_with_a_message_never_a_5xx(fuzz_target, data, filename, content_type, metadata):
    _, client, experiment, accepted = fuzz_target
    parts = [(key, None, None, value) for key, value in metadata.items()]
    parts.append((b"file", filename, content_type, data))
    check(post(client, experiment, parts), accepted)


@pytest.mark.parametrize("case", ["zero_bytes", "bomb_png", "truncated_png", "png_named_tif", "traversal_name",
                                  "no_file_field", "empty_filename", "non_utf8_metadata", "many_files_one_bad"])
def test_named_hostile_uploads(fuzz_target, case):
    _, client, experiment, accepted = fuzz_target
    good = seed_files()["grey.png"] + uuid.uuid4().bytes  # trailing bytes after IEND: still a valid PNG
    parts = {
        "zero_bytes": [(b"file", b"empty.png", b"image/png", b"")],
        "bomb_png": [(b"file", b"bomb.png", b"image/png", png_declaring(100_000, 100_000))],
        "truncated_png": [(b"file", b"cut.png", b"image/png", good[: len(good) // 2])],
        "png_named_tif": [(b"file", b"really-a-png.tif", b"image/tiff", good)],
        "traversal_name": [(b"file", b"../../../etc/cron.d/evil.png", b"image/png", good + b"1")],
        "no_file_field": [(b"condition", None, None, b"x")],
        "empty_filename": [(b"file", b"", b"image/png", good + b"2")],
        "non_utf8_metadata": [(b"condition", None, None, b"\xff\xfe\xc3\x28"), (b"well", None, None, b"\x80"),
                              (b"file", b"meta.png", b"image/png", good + b"3")],
        "many_files_one_bad": [(b"file", b"ok.png", b"image/png", good + b"4"),
                               (b"file", b"bad.png", b"image/png", b"\x89PNG\r\n\x1a\nnope")],
    }[case]
    response = post(client, experiment, parts)
    check(response, accepted)
    expected = {"zero_bytes": 400, "bomb_png": 413, "truncated_png": 400, "no_file_field": 400,
                "many_files_one_bad": 400}
    if case in expected:
        assert response.status_code == expected[case], response.text
    if case == "many_files_one_bad":  # nothing from a refused request is kept
        assert "bad.png" in response.json()["error"]["message"]
