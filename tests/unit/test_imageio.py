"""Decoding every image kind the product accepts, and refusing the ones it must not."""
import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from shared.domain.imaging.decoders import MAX_TIFF_PAGES

from shared.domain.imaging.errors import ImageError, ImageTooLarge

from shared.domain.imaging.imageio import decode


def png_bytes(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def tiff_bytes(array, **kwargs):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def grey16():
    rng = np.random.default_rng(0)
    return rng.integers(0, 65535, size=(40, 50), dtype=np.uint16)


def test_png_grey_rgb_rgba_and_16_bit(grey16):
    rgb = np.random.default_rng(1).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    assert decode(png_bytes(rgb)).shape == (30, 20, 3)
    rgba = np.dstack([rgb, np.full((30, 20), 255, np.uint8)])
    assert decode(png_bytes(rgba)).shape == (30, 20, 3)
    out = decode(png_bytes(grey16))
    assert out.dtype == np.uint16 and np.array_equal(out, grey16)


def test_jpeg():
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 24, 3), 128, np.uint8)).save(buffer, format="JPEG")
    assert decode(buffer.getvalue()).shape == (16, 24, 3)


def test_tiff_16_bit_multipage_and_channel_choice(grey16):
    assert np.array_equal(decode(tiff_bytes(grey16)), grey16)
    stack = np.stack([grey16, grey16 // 2, grey16 // 3])  # 3 pages = 3 channels
    data = tiff_bytes(stack, photometric="minisblack", metadata={"axes": "CYX"})
    assert np.array_equal(decode(data, channel=1), grey16 // 2)
    with pytest.raises(ImageError) as err:
        decode(data, channel=5)
    assert err.value.code == "bad_channel"


def test_ome_tiff_takes_the_asked_channel_and_projects_depth(grey16):
    volume = np.stack([np.stack([grey16, grey16 + 1]), np.stack([grey16 // 4, grey16 // 4 + 1])])  # C, Z, Y, X
    data = tiff_bytes(volume, ome=True, metadata={"axes": "CZYX"})
    out = decode(data, channel=1)
    assert out.shape == grey16.shape
    assert np.array_equal(out, grey16 // 4 + 1)  # maximum over Z of channel 1


@pytest.mark.parametrize("data, code", [
    (b"", "empty_file"),
    (b"hello, this is a text file\n", "unsupported_format"),
    (b"%PDF-1.4 not an image", "unsupported_format"),
])
def test_non_images_are_refused(data, code):
    with pytest.raises(ImageError) as err:
        decode(data)
    assert err.value.code == code and err.value.status == 400 and err.value.message


def test_truncated_png_is_refused():
    data = png_bytes(np.random.default_rng(2).integers(0, 255, (200, 200), dtype=np.uint8))
    with pytest.raises(ImageError) as err:
        decode(data[: len(data) // 2])
    assert err.value.code == "corrupt_image"


def test_corrupt_tiff_is_refused(grey16):
    data = bytearray(tiff_bytes(grey16))
    data[8:64] = b"\xff" * 56
    with pytest.raises(ImageError):
        decode(bytes(data))


def test_decompression_bomb_is_refused_before_decoding():
    # A PNG whose header declares 100000 x 100000 pixels, with almost no data behind it.
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    with pytest.raises(ImageTooLarge) as err:
        decode(data, max_pixels=250_000_000)
    assert err.value.status == 413


def test_tiff_bomb_is_refused_from_its_header():
    big = tiff_bytes(np.zeros((64, 64), np.uint8))
    with pytest.raises(ImageTooLarge):
        decode(big, max_pixels=1000)


def test_tiff_stack_is_bounded_by_its_bytes_not_only_its_plane():
    plane = 16 * 16
    few = tiff_bytes(np.ones((4, 16, 16), np.uint8), photometric="minisblack")
    assert decode(few, max_pixels=plane).shape[:2] == (16, 16)
    many = tiff_bytes(np.ones((20, 16, 16), np.uint16), photometric="minisblack")  # 40 bytes per allowed pixel
    with pytest.raises(ImageTooLarge) as err:
        decode(many, max_pixels=plane)
    assert err.value.status == 413 and "MB for pixels" in err.value.message


def test_tiff_tile_declaring_itself_larger_than_the_image_is_refused_before_allocating():
    data = bytearray(tiff_bytes(np.ones((24, 32), np.uint16), tile=(16, 16), compression="zlib"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages[0].tags
        for name in ("TileWidth", "TileLength"):  # 65520 x 65520 x 2 bytes: the decoder's buffer for one tile
            struct.pack_into("<H" if tags[name].dtype == 3 else "<I", data, tags[name].valueoffset, 65520)
    with pytest.raises(ImageTooLarge) as err:
        decode(bytes(data), max_pixels=4_000_000)
    assert "one tile or strip" in err.value.message


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bigtiff", [False, True])
def test_tiff_whose_directories_loop_is_refused(bigtiff):
    data = bytearray(tiff_bytes(np.ones((2, 24, 32), np.uint8), photometric="minisblack", bigtiff=bigtiff,
                                metadata=None))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        first, last = tif.pages[0].offset, tif.pages[1].offset
    entry, count, pointer = (20, "<Q", "<Q") if bigtiff else (12, "<H", "<I")
    (entries,) = struct.unpack_from(count, data, last)
    struct.pack_into(pointer, data, last + struct.calcsize(count) + entries * entry, first)  # page 2 -> page 1
    with pytest.raises(ImageError) as err:
        decode(bytes(data))
    assert err.value.code == "corrupt_image" and "loop" in err.value.message


@pytest.mark.timeout(30)
def test_tiff_of_too_many_pages_is_refused_before_tifffile_walks_them():
    at_limit = tiff_bytes(np.ones((MAX_TIFF_PAGES, 1, 1), np.uint8), photometric="minisblack", metadata=None,
                          contiguous=False)
    decode(at_limit)
    over = tiff_bytes(np.ones((MAX_TIFF_PAGES + 1, 1, 1), np.uint8), photometric="minisblack", metadata=None,
                      contiguous=False)
    with pytest.raises(ImageTooLarge) as err:
        decode(over)
    assert err.value.status == 413 and "image directories" in err.value.message
