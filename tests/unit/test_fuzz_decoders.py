"""Fuzzing the image decoders: any bytes either decode to a sane image or raise ImageError (with a
code, a message and a 4xx status) — never another exception, never a huge allocation.

Examples: NUCLEUS_FUZZ_EXAMPLES (default 300).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from shared.domain.imaging.errors import ImageError

from shared.domain.imaging.imageio import decode
from testkit.fuzzdata import broken_files, png_declaring, seed_files, tiff_declaring

EXAMPLES = int(os.environ.get("NUCLEUS_FUZZ_EXAMPLES", "300"))
MAX_PIXELS = 4_000_000  # small, so "huge declared size" is tried cheaply and must be refused before decoding


def check(data: bytes) -> None:
    try:
        image = decode(data, max_pixels=MAX_PIXELS)
    except ImageError as exc:
        assert 400 <= exc.status < 500
        assert exc.code and isinstance(exc.code, str)
        assert exc.message.strip()
        return
    assert isinstance(image, np.ndarray)
    assert image.ndim in (2, 3) and image.shape[0] * image.shape[1] <= MAX_PIXELS
    assert image.ndim == 2 or image.shape[2] in (1, 3, 4)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_files())
def test_broken_files_decode_or_are_refused(data):
    check(data)


@pytest.mark.parametrize("width,height", [(0, 0), (1, 0), (100_000, 100_000), (2**31 - 1, 2**31 - 1),
                                          (70_000, 1), (2000, 2000)])
def test_declared_sizes_are_checked_before_decoding(width, height):
    for data in (png_declaring(width, height), tiff_declaring(width, height)):
        with pytest.raises(ImageError) as caught:
            decode(data, max_pixels=MAX_PIXELS)
        if width * height > MAX_PIXELS:
            assert caught.value.status == 413, caught.value.message


@pytest.mark.timeout(30)
def test_splice_that_made_tifffile_loop_forever_is_refused():
    # Found by the test above: a PNG signature spliced into the directory entries of deflate.tif leaves a directory
    # at offset 12, inside the first one, that points back to it. tifffile's series detection followed the two
    # forever, growing the process to 23 GB.
    seed = seed_files()["deflate.tif"]
    with pytest.raises(ImageError) as err:
        decode(seed[:50] + b"\x89PNG\r\n\x1a\n" + seed[50:], max_pixels=MAX_PIXELS)
    assert err.value.code == "corrupt_image"
