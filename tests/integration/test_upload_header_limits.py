"""An image upload over the worker-memory budget is refused from its header, before any pixel is decoded: a
15000x15000 grey PNG and a 20000x20000 RGB PNG of a few hundred KB to a MB each, which decode to 225 MB and
1.2 GB, cost the API next to nothing to refuse. Measured in a fresh process (python memory through tracemalloc,
and the resident peak where /proc lets it be reset), so nothing the test session holds blurs the figures.
And what the header declares is what decoding holds, so the early check refuses exactly what the late one did."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from services.api.intake import TooLargeForWorker, worker_budget
from shared.domain.imaging.read_options import ReadOptions
from shared.domain.imaging.reading import read_picture
from shared.domain.segmentation.tiled import decoded_bytes
from testkit.env import service_env
from testkit.servers import REPO

# A budget that admits a small image but neither big one (the tile size keeps a small image's need low).
SETTINGS = {"worker_memory_bytes": 2 << 30, "tile_size": 512, "max_pixels": 500_000_000}
BIG = {"grey.png": (15000, False), "rgb.png": (20000, True)}
SECONDS = 1.0


def png_of_zeros(side: int, colour: bool) -> bytes:
    """A valid 8-bit PNG of side x side zeros (grey or RGB), built without holding its pixels."""
    from testkit.hostile import zlib_zeros

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2 if colour else 0, 0, 0, 0)
    row = 1 + side * (3 if colour else 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib_zeros(row * side))
            + chunk(b"IEND", b""))


def refuse_in_a_fresh_api() -> None:
    """The child: a real app on SETTINGS; a small upload first (it imports the decoders), then each big PNG
    alone, measured. Prints one JSON line per big file."""
    import tracemalloc

    from shared.infra.settings import get_settings
    from testkit.api import ApiHarness, nuclei_image
    from testkit.hostile import can_reset_peak, measured

    admin = ApiHarness(get_settings()).client("admin")
    assert admin.post("/api/v1/experiments", json={"name": "header-limits"}).status_code == 201
    warm = admin.upload("header-limits", [("small.png", nuclei_image())])
    assert warm.status_code == 202, warm.json

    def listed() -> int:
        return admin.get("/api/v1/experiments/header-limits/results").json["total"]

    for name, (side, colour) in BIG.items():
        data, before = png_of_zeros(side, colour), listed()
        tracemalloc.start()
        with measured() as cost:
            response = admin.upload("header-limits", [(name, data)])
        python_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(json.dumps({"name": name, "file_bytes": len(data), "status": response.status_code,
                          "error": response.json.get("error"), "seconds": cost.seconds, "python_peak": python_peak,
                          "resident_growth": cost.peak_growth_bytes if can_reset_peak() else None,
                          "accepted": listed() - before}))


@pytest.fixture(scope="module")
def refusals(tmp_path_factory) -> dict[str, dict]:
    env = service_env(tmp_path_factory.mktemp("header-limits"), **SETTINGS)
    env["PYTHONPATH"] = str(REPO)
    child = subprocess.run([sys.executable, "-c", f"from {__name__} import refuse_in_a_fresh_api as r; r()"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    rows = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    return {row["name"]: row for row in rows}


@pytest.mark.parametrize("name", list(BIG))
def test_an_image_over_the_worker_budget_is_refused_before_it_is_decoded(refusals, name):
    side, colour = BIG[name]
    row = refusals[name]
    decoded = side * side * (3 if colour else 1)
    assert row["file_bytes"] < decoded / 100  # a compressed bomb: the cost of decoding is all in the pixels
    assert row["status"] == 413, row
    assert row["error"]["code"] == "image_too_large_for_worker", row
    message = row["error"]["message"]
    assert message.startswith(f"{name}: a {side}x{side} image needs about "), message
    assert message.endswith("a worker may use (NUCLEUS_WORKER_MEMORY_BYTES)"), message
    assert row["accepted"] == 0
    assert row["seconds"] < SECONDS, row
    # Decoding would hold at least the decoded array; refusing holds the upload's bytes and little else.
    assert row["python_peak"] < decoded / 10, row
    if row["resident_growth"] is not None:
        assert row["resident_growth"] < decoded / 10, row


def _png(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def _pillow(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


def _tiff(array: np.ndarray, **write) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **write)
    return buffer.getvalue()


rng = np.random.default_rng(7)
GREY = rng.integers(0, 255, (40, 60), dtype=np.uint8)
COLOUR = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
FILES = {
    "8-bit grey PNG": (lambda: _png(GREY), None),
    "16-bit grey PNG": (lambda: _png(GREY.astype(np.uint16) * 257), None),
    "RGB PNG": (lambda: _png(COLOUR), None),
    "RGB PNG, one channel": (lambda: _png(COLOUR), 1),
    "RGBA PNG": (lambda: _png(np.dstack([COLOUR, GREY])), None),
    "palette PNG": (lambda: _pillow(Image.fromarray(COLOUR).convert("P"), "PNG"), None),
    "grey JPEG": (lambda: _pillow(Image.fromarray(GREY), "JPEG"), None),
    "RGB JPEG": (lambda: _pillow(Image.fromarray(COLOUR), "JPEG"), None),
    "16-bit TIFF": (lambda: _tiff(GREY.astype(np.uint16)), None),
    "3-channel 16-bit TIFF stack": (lambda: _tiff(np.stack([GREY.astype(np.uint16)] * 3), photometric="minisblack"), 2),
    "float32 Z stack": (lambda: _tiff(np.stack([GREY.astype(np.float32)] * 4), photometric="minisblack",
                                              metadata={"axes": "ZYX"}), None),
}


@pytest.mark.parametrize("name", list(FILES))
def test_the_header_declares_what_decoding_holds(name):
    make, channel = FILES[name]
    seen = []
    picture = read_picture(make(), ReadOptions(channel=channel),
                           admit=lambda nuclear, channels: seen.append((nuclear, channels)))
    [(nuclear, channels)] = seen
    assert not any(nuclear.strides + channels.strides)  # stand-ins: one value each, no pixels decoded for them
    assert (nuclear.shape, nuclear.dtype) == (picture.nuclear.shape, picture.nuclear.dtype)
    assert (channels.shape, channels.dtype) == (picture.channels.shape, picture.channels.dtype)
    assert decoded_bytes(nuclear, channels) == decoded_bytes(picture.nuclear, picture.channels)


def test_the_budget_check_on_the_header_refuses_what_it_did_after_decoding():
    from shared.infra.settings import Settings

    admit = worker_budget(Settings(worker_memory_bytes=1 << 20))
    seen = []
    picture = read_picture(_png(GREY), admit=lambda *arrays: seen.append(arrays))
    for arrays in (seen[0], (picture.nuclear, picture.channels)):
        with pytest.raises(TooLargeForWorker) as refused:
            admit(*arrays)
        assert (refused.value.status, refused.value.code) == (413, "image_too_large_for_worker")
        assert "a 60x40 image needs about" in refused.value.message
