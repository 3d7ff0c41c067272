"""PNG, JPEG and TIFF decoding within the limits: the declared size is checked before any pixel is decoded,
so a decompression bomb costs nothing; a file whose directories loop or declare too much is refused from its
header."""
from __future__ import annotations

import io
import math
import struct

import numpy as np

from shared.domain.imaging.errors import ImageError, ImageTooLarge

DEFAULT_MAX_PIXELS = 250_000_000
# A TIFF stack (planes, channels, wide samples) may hold more than one value per pixel of its largest allowed
# plane, but not more bytes than this many per allowed pixel: a 4-channel float32 image of the largest size.
MAX_BYTES_PER_PIXEL = 16
# tifffile's series detection takes time that grows faster than the number of image directories, whatever their
# size: a file of thousands of 1x1 pages would hold an API thread for minutes. Real stacks stay far below this.
MAX_TIFF_PAGES = 4096


def sniff_format(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})", code="empty_image")
    if height * width > max_pixels:
        raise ImageTooLarge(f"image declares {width}x{height} = {width * height / 1e6:.0f} megapixels; "
                            f"the limit is {max_pixels / 1e6:.0f}")


def pick_channel(image: np.ndarray, channel: int | None) -> np.ndarray:
    """HxWxC → HxW when a channel is asked for, HxWx3 for colour, HxW for grey."""
    if image.ndim == 2:
        if channel not in (None, 0):
            raise ImageError(f"channel {channel} asked for, but the image has one channel", code="bad_channel")
        return image
    channels = image.shape[2]
    if channel is not None:
        if not 0 <= channel < channels:
            raise ImageError(f"channel {channel} asked for, but the image has {channels}", code="bad_channel")
        return image[..., channel]
    if channels in (3, 4):
        return image[..., :3]
    return image[..., 0]


def open_pillow(data: bytes):
    """A Pillow image of `data`, its header read and nothing decoded, without Pillow's own pixel limit: callers
    check ours (check_pixels) before load()."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image.open(io.BytesIO(data))


def decode_pillow(data: bytes, channel: int | None, max_pixels: int) -> np.ndarray:
    with open_pillow(data) as img:
        check_pixels(img.height, img.width, max_pixels)
        img.load()
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in ("LA", "PA"):
            img = img.convert("L")
        elif img.mode == "CMYK":
            img = img.convert("RGB")
        array = np.array(img)
    return pick_channel(array, channel)


_CHANNEL_AXES = "CSIQ"


def decode_tiff(data: bytes, channel: int | None, max_pixels: int) -> np.ndarray:
    import tifffile

    check_ifd_chain(data)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        if not tif.series:
            raise ImageError("TIFF holds no image", code="empty_image")
        series = tif.series[0]
        axes, shape = series.axes, series.shape
        if "Y" not in axes or "X" not in axes:
            raise ImageError(f"TIFF has no 2-D image (axes {axes})", code="unsupported_format")
        check_pixels(shape[axes.index("Y")], shape[axes.index("X")], max_pixels)
        check_tiff_bytes(series, max_pixels)
        array = series.asarray()
    # Reduce to Y, X and at most one channel axis: time → first frame, depth → maximum projection.
    for ax in "TZ":
        while ax in axes:
            i = axes.index(ax)
            array = array.take(0, axis=i) if ax == "T" else array.max(axis=i)
            axes = axes[:i] + axes[i + 1:]
    channel_axes = [a for a in axes if a in _CHANNEL_AXES]
    if channel is None and "S" in axes and shape[series.axes.index("S")] in (3, 4):
        keep = "S"  # RGB samples: colour image
        for a in channel_axes:
            if a != "S":
                i = axes.index(a)
                array, axes = array.take(0, axis=i), axes[:i] + axes[i + 1:]
    else:
        keep = channel_axes[0] if channel_axes else None
        for a in channel_axes[1:]:
            i = axes.index(a)
            array, axes = array.take(0, axis=i), axes[:i] + axes[i + 1:]
    other = [a for a in axes if a not in "YX" and a != keep]
    for a in other:  # unknown axes: first plane
        i = axes.index(a)
        array, axes = array.take(0, axis=i), axes[:i] + axes[i + 1:]
    order = [axes.index("Y"), axes.index("X")] + ([axes.index(keep)] if keep else [])
    array = np.transpose(array, order)
    return pick_channel(array, channel)


def check_ifd_chain(data: bytes) -> None:
    """Refuse a chain of image directories that loops back on itself, or is longer than MAX_TIFF_PAGES:
    tifffile's series detection would follow a loop forever: a tiny file would hold a process busy while its
    memory grew without bound."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    offset_format, count_format, entry_size, first_at = ("Q", "Q", 20, 8) if big else ("I", "H", 12, 4)
    offset_size, count_size = struct.calcsize(offset_format), struct.calcsize(count_format)
    if len(data) < first_at + offset_size:
        return  # too short to hold a directory: tifffile refuses it
    (offset,) = struct.unpack_from(order + offset_format, data, first_at)
    seen = set()
    while offset:
        if offset in seen:
            raise ImageError(f"corrupt TIFF: its image directories loop back to offset {offset}", code="corrupt_image")
        seen.add(offset)
        if len(seen) > MAX_TIFF_PAGES:
            raise ImageTooLarge(f"the TIFF holds more than {MAX_TIFF_PAGES} image directories (pages); "
                                "send fewer planes per file")
        if offset + count_size > len(data):
            return
        (count,) = struct.unpack_from(order + count_format, data, offset)
        next_at = offset + count_size + count * entry_size
        if next_at + offset_size > len(data):
            return
        (offset,) = struct.unpack_from(order + offset_format, data, next_at)


def check_tiff_bytes(series, max_pixels: int) -> None:
    """The whole series, and each tile or strip the decoder allocates (a tile may declare itself far larger than
    the image), within MAX_BYTES_PER_PIXEL bytes per allowed pixel."""
    limit = max_pixels * MAX_BYTES_PER_PIXEL
    segment = math.prod(getattr(series.keyframe, "chunks", ())) * series.dtype.itemsize
    for what, nbytes in (("pixels", series.nbytes), ("one tile or strip", segment)):
        if nbytes > limit:
            raise ImageTooLarge(f"TIFF declares {nbytes / 1e6:.0f} MB for {what} ({' x '.join(map(str, series.shape))} "
                                f"{series.dtype}); the limit is {limit / 1e6:.0f} MB")
