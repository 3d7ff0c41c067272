"""Reading a microscope image on purpose: every dimension of the file is chosen, none is dropped silently.

A file may hold scenes, time points, Z planes and channels. What is segmented is one 2-D plane of one
channel (the nuclear stain, chosen by its name in the metadata or its index), or an RGB photo kept as
colour; every channel of the chosen scene, time point and Z choice is kept for measuring. A multi-channel
fluorescence file with no channel chosen is refused with its channel names. The physical pixel size comes
from the metadata unless one is given.

TIFF (OME-TIFF, ImageJ, plain) is read with tifffile behind shared.domain.imaging.decoders' defences; PNG and JPEG with
Pillow; CZI with bioio's reader plugin, LIF with liffile and ND2 with the nd2 library (shared.domain.imaging.vendor_formats). Each
reader checks the shape declared by the metadata against the limits before it loads a pixel.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from shared.domain.imaging.decoders import (DEFAULT_MAX_PIXELS, check_ifd_chain, check_pixels, check_tiff_bytes,
                                           decode_pillow, open_pillow, sniff_format)
from shared.domain.imaging.errors import ImageError, ImageTooLarge
from shared.domain.imaging.read_options import OptionError, ReadOptions
from shared.domain.imaging.stack import Stack, by_name_or_index, reduce_z, select_scene, to_um

@dataclass
class Picture:
    """One plane of a file, read on purpose."""
    nuclear: np.ndarray           # what is segmented: HxW (the nuclear channel) or HxWx3 (an RGB photo)
    channels: np.ndarray          # HxWxC: every channel, for measuring (an RGB photo: its three colours)
    channel_names: list[str]      # the file's names, in order; ch<N> where it names none
    channel: int | None           # index of the nuclear channel; None for an RGB photo segmented as colour
    pixel_size_um: float | None   # the given one, else the file's, else None
    pixel_size_from: str | None   # "given" | "file" | None
    z: str | int | None           # "max" or the plane read; None when the file has one plane
    t: int | None                 # the time point read; None when the file has one
    scene: str | int | None       # the scene read; None when the file has one
    format: str = ""
    rgb: bool = False
    sizes: dict = field(default_factory=dict)  # the chosen scene's dimensions: T, C, Z, Y, X

    def record(self) -> dict[str, str]:
        """How the file was read, as Image.extra keeps it (text values, like any metadata): each choice the
        file offered (a channel among several, a Z plane or projection, a time point, a scene)."""
        record = {}
        if len(self.channel_names) > 1:
            record["channel_name"] = "rgb" if self.channel is None else self.channel_names[self.channel]
        for key in ("z", "t", "scene"):
            value = getattr(self, key)
            if value is not None:
                record[key] = str(value)
        return record


# admit(nuclear, channels): sees stand-ins of the arrays a Picture will hold (their shapes and dtype, views of one
# another as the decoded ones will be, no pixels) before any pixel is decoded; refuses by raising an ImageError.
Admit = Callable[[np.ndarray, np.ndarray], None]


def read_picture(source: bytes | str | Path, options: ReadOptions = ReadOptions(), *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None,
                 filename: str | None = None, admit: Admit | None = None) -> Picture:
    """Bytes (an upload) or a path (the command line) -> the Picture chosen by `options`."""
    return _with_stack(source, options, max_pixels, max_bytes, filename, partial(choose, admit=admit))


def probe(source: bytes | str | Path, options: ReadOptions = ReadOptions(), *,
          max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None, filename: str | None = None) -> None:
    """Refuse, as read_picture would, a file that `options` cannot apply to (no channel chosen among several,
    an unknown channel, scene, Z plane or time point; over the limits), reading its metadata only."""
    _with_stack(source, options, max_pixels, max_bytes, filename, check)


def _with_stack(source, options: ReadOptions, max_pixels: int, max_bytes: int | None, filename: str | None, use):
    """Open the file's Stack for the chosen scene, hand it to `use(stack, options)`, close it."""
    path = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _read_folder(path, options, max_pixels, use)
        size = path.stat().st_size
        filename = filename or path.name
        with path.open("rb") as fh:
            head = fh.read(16)
    else:
        size, head = len(source), source[:16]
    if max_bytes is not None and size > max_bytes:
        raise ImageTooLarge(f"the file holds {size} bytes; the limit is {max_bytes}")
    if not size:
        raise ImageError("the file is empty", code="empty_file")
    kind = sniff_format(head)
    stack = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind in ("tiff", "png", "jpeg"):
                data = path.read_bytes() if path is not None else source
                stack = _tiff_stack(data, options.scene, max_pixels) if kind == "tiff" else \
                    _pillow_stack(data, kind, max_pixels)
            else:
                from shared.domain.imaging import vendor_formats

                kind = vendor_formats.sniff(head) or kind
                stack = vendor_formats.stack(path if path is not None else source, options.scene, max_pixels,
                                             filename)
            return use(stack, options)
    except ImageError:
        raise
    except (MemoryError, OverflowError) as exc:
        raise ImageTooLarge(f"image too large to decode: {exc}") from exc
    except Exception as exc:  # decoders raise many types for corrupt input; all mean the same here
        raise ImageError(f"corrupt or truncated {(kind or 'image').upper()}: {exc}".strip(),
                         code="corrupt_image") from exc
    finally:
        if stack is not None and stack.close is not None:
            stack.close()


def _read_folder(path: Path, options: ReadOptions, max_pixels: int, use):
    """A folder is an OME-Zarr image (the command line; an upload is one file)."""
    from shared.domain.imaging import vendor_formats

    try:
        return use(vendor_formats.ome_zarr(path, options.scene, max_pixels), options)
    except ImageError:
        raise
    except (MemoryError, OverflowError) as exc:
        raise ImageTooLarge(f"image too large to decode: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a damaged chunk or metadata: the same refusal as a corrupt file
        raise ImageError(f"corrupt OME-Zarr image {path.name}: {exc}", code="corrupt_image") from exc


def check(stack: Stack, options: ReadOptions) -> int | None:
    """The options against the stack's metadata: the nuclear channel's index (None: an RGB photo as colour)."""
    sizes = stack.sizes
    names = [name or f"ch{i}" for i, name in enumerate(stack.channel_names)]
    t = options.t
    if not 0 <= t < sizes.get("T", 1):
        raise OptionError(f"time point {t} asked for, but the file has {sizes.get('T', 1)} "
                          f"(0 to {sizes.get('T', 1) - 1})")
    z = options.z
    if z != "max" and not 0 <= z < sizes.get("Z", 1):
        raise OptionError(f"Z plane {z} asked for, but the file has {sizes.get('Z', 1)} "
                          f"(0 to {sizes.get('Z', 1) - 1}, or 'max')")
    return _channel_index(options.channel, names, stack.rgb)


def choose(stack: Stack, options: ReadOptions, admit: Admit | None = None) -> Picture:
    """Apply the options to a stack: the scene is already chosen; pick T, Z and the nuclear channel."""
    channel = check(stack, options)
    sizes, t, z = stack.sizes, options.t, options.z
    names = [name or f"ch{i}" for i, name in enumerate(stack.channel_names)]
    if admit is not None:
        admit(*_pick(_declared_planes(stack), stack.rgb, channel))
    nuclear, channels = _pick(stack.load(t, z), stack.rgb, channel)
    channels, nuclear = _clean(channels), _clean(nuclear)
    pixel_size, source = options.pixel_size_um, "given"
    if pixel_size is None:
        pixel_size, source = stack.pixel_size_um, ("file" if stack.pixel_size_um else None)
    return Picture(nuclear=nuclear, channels=channels, channel_names=names, channel=channel,
                   pixel_size_um=pixel_size, pixel_size_from=source,
                   z=z if sizes.get("Z", 1) > 1 else None, t=t if sizes.get("T", 1) > 1 else None,
                   scene=stack.scene if len(stack.scenes) > 1 else None, format=stack.format, rgb=stack.rgb,
                   sizes={k: sizes.get(k, 1) for k in "TCZYX"})


def _pick(planes: np.ndarray, rgb: bool, channel: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(nuclear, channels) from what Stack.load returns, as views of it."""
    if rgb:
        channels = planes[..., :3]
        return (channels if channel is None else channels[..., channel]), channels
    return planes[channel], np.moveaxis(planes, 0, -1)


def _declared_planes(stack: Stack) -> np.ndarray:
    """A stand-in of what stack.load returns, of its declared shape and dtype, holding no pixels."""
    sizes = stack.sizes
    shape = (sizes["Y"], sizes["X"], 3) if stack.rgb else (sizes.get("C", 1), sizes["Y"], sizes["X"])
    return np.broadcast_to(np.zeros((), stack.dtype), shape)


def _channel_index(wanted: str | int | None, names: list[str], rgb: bool) -> int | None:
    if wanted is None:
        if rgb or len(names) == 1:
            return None if rgb else 0
        raise OptionError(f"the file has {len(names)} channels ({', '.join(names)}); choose the nuclear one by name "
                          "or index (--channel, or the upload's channel field)", code="channel_required")
    return by_name_or_index(wanted, names, "channel")


def _clean(image: np.ndarray) -> np.ndarray:
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ImageError(f"unsupported pixel type {image.dtype}", code="unsupported_format")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    return image


# --- PNG and JPEG ------------------------------------------------------------------------------------------------

# Pillow modes that shared.domain.imaging.decoders.decode_pillow turns into colour (palettes and CMYK become RGB); the others grey
COLOUR_MODES = {"P", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"}
# What numpy makes of a Pillow mode's pixels where it is not 8 bits a sample (LA and PA decode to L)
MODE_DTYPES = {"1": "|b1", "I": "<i4", "F": "<f4", "I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2"}


def _pillow_stack(data: bytes, kind: str, max_pixels: int) -> Stack:
    with open_pillow(data) as img:  # the header only: decoding waits for load()
        check_pixels(img.height, img.width, max_pixels)
        rgb, width, height = img.mode in COLOUR_MODES, img.width, img.height
        dtype = np.dtype(MODE_DTYPES.get(img.mode, "|u1"))
    sizes = {"T": 1, "C": 3 if rgb else 1, "Z": 1, "Y": height, "X": width}

    def load(t: int, z: str | int) -> np.ndarray:
        array = decode_pillow(data, None, max_pixels)  # HxW grey or HxWx3 colour
        if (array.ndim == 3) != rgb:
            raise ImageError(f"{kind.upper()} decodes to {array.shape}, not what its header declared",
                             code="corrupt_image")
        return array if rgb else array[np.newaxis]

    return Stack(kind, sizes, dtype, [None] * sizes["C"], None, [""], 0, load, rgb=rgb)


# --- TIFF --------------------------------------------------------------------------------------------------------

def _ome_images(xml: str) -> list[dict]:
    """Per OME Image: its name, channel names and physical X size in µm."""
    import xml.etree.ElementTree as ET

    images = []
    for image in ET.fromstring(xml).iter():
        if not image.tag.endswith("}Image") and image.tag != "Image":
            continue
        pixels = next((p for p in image if p.tag.endswith("Pixels")), None)
        if pixels is None:
            continue
        channels = [c.get("Name") or None for c in pixels if c.tag.endswith("}Channel") or c.tag == "Channel"]
        images.append({"name": image.get("Name") or image.get("ID") or "",
                       "channels": channels,
                       "pixel_size_um": to_um(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"))})
    return images


def _tiff_pixel_size(tif, page) -> float | None:
    tags = page.tags
    if "XResolution" not in tags:
        return None
    numerator, denominator = tags["XResolution"].value
    if not numerator or not denominator:
        return None
    per_unit = numerator / denominator  # pixels per unit
    if tif.is_imagej:
        unit = (tif.imagej_metadata or {}).get("unit")
        return to_um(1 / per_unit, unit) if unit else None
    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
    return 1e4 / per_unit if int(unit) == 3 else None  # centimetres; inches are a photo's print size


def _tiff_stack(data: bytes, scene: str | int, max_pixels: int) -> Stack:
    import tifffile

    check_ifd_chain(data)
    tif = tifffile.TiffFile(io.BytesIO(data))
    try:
        if not tif.series:
            raise ImageError("TIFF holds no image", code="empty_image")
        ome = _ome_images(tif.ome_metadata) if tif.is_ome and tif.ome_metadata else []
        scenes = [s.name or (ome[i]["name"] if i < len(ome) else f"series {i}") for i, s in enumerate(tif.series)]
        index = select_scene(scenes, scene)
        series = tif.series[index]
        axes, shape = series.axes, series.shape
        if "Y" not in axes or "X" not in axes:
            raise ImageError(f"TIFF has no 2-D image (axes {axes})", code="unsupported_format")
        check_pixels(shape[axes.index("Y")], shape[axes.index("X")], max_pixels)
        check_tiff_bytes(series, max_pixels)
        shaped, axes = _canonical(np.broadcast_to(np.zeros((), series.dtype), shape), axes)  # no pixels yet
        meta = ome[index] if index < len(ome) else {}
        pixel_size = meta.get("pixel_size_um") or _tiff_pixel_size(tif, series.keyframe)
    except BaseException:
        tif.close()
        raise
    rgb = "S" in axes
    sizes = {a: shaped.shape[axes.index(a)] for a in axes}
    names = list(meta.get("channels") or [])
    channels = 3 if rgb else sizes["C"]
    names = names if len(names) == channels else [None] * channels

    def load(t: int, z: str | int) -> np.ndarray:
        array, _axes = _canonical(series.asarray(), series.axes)
        planes = reduce_z(array[t], z, axis=1)  # C Z Y X (S) -> C Y X (S)
        return planes[0] if rgb else planes

    return Stack("ome-tiff" if ome else "tiff", sizes, series.dtype, names, pixel_size, scenes,
                 index, load, rgb=rgb, close=tif.close)


def _canonical(array: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Any tifffile axes -> T C Z Y X (+ S for an 8-bit RGB/RGBA photo). Samples that are not an 8-bit colour
    photo, image sequences (I) and unknown axes (Q) count as channels when the file has no C axis; any
    other axis (a second unknown one, an exposure, a phase...) gives its first plane."""
    rgb = "S" in axes and array.shape[axes.index("S")] in (3, 4) and array.dtype == np.uint8 and "C" not in axes
    for candidate in ("S", "I", "Q"):
        if "C" not in axes and candidate in axes and not (candidate == "S" and rgb):
            axes = axes.replace(candidate, "C")
    for i in reversed(range(len(axes))):
        if axes[i] not in "TCZYX" and not (axes[i] == "S" and rgb):
            array, axes = array[(slice(None),) * i + (0,)], axes[:i] + axes[i + 1:]  # a view
    for name in "TCZ":
        if name not in axes:
            array, axes = array[np.newaxis], name + axes
    # a repeated axis letter cannot happen in tifffile's series; order them
    target = "TCZYX" + ("S" if rgb else "")
    array = np.transpose(array, [axes.index(a) for a in target])
    if rgb:
        array = array[..., :3]
    return array, target
