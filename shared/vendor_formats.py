"""Microscope vendors' files: Zeiss CZI and Leica LIF through bioio's reader plugins, Nikon ND2 through the nd2
library and OME-Zarr folders through zarr (bioio-nd2 and bioio-ome-zarr need s3fs, whose botocore pin conflicts
with the boto3 that moto brings to the tests). Each hands
shared.reading a Stack whose shape and type come from the metadata; pixels load only for the chosen time
point, once that shape has passed the limits.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from shared.imageio import ImageError
from shared.reading import Stack, _to_um, check_plane_bytes, reduce_z, select_scene

MAGIC = {"czi": (b"ZISRAWFILE",), "nd2": (b"\xda\xce\xbe\x0a", b"\x00\x00\x00\x0cjP  \r\n\x87\n")}
SUFFIXES = {".czi": "czi", ".nd2": "nd2", ".lif": "lif"}
KNOWN = "PNG, JPEG, TIFF (OME-TIFF, ImageJ), CZI, ND2 or LIF"


def sniff(head: bytes) -> str | None:
    for kind, magics in MAGIC.items():
        if any(head.startswith(m) for m in magics):
            return kind
    if len(head) >= 9 and head[:4] == b"\x70\x00\x00\x00" and head[8] == 0x2A:
        return "lif"
    return None


def stack(source: bytes | Path, scene: str | int, max_pixels: int, filename: str | None = None) -> Stack:
    head = source[:16] if isinstance(source, bytes) else Path(source).open("rb").read(16)
    kind = sniff(head)
    if kind is None:
        raise ImageError(f"not an image this product reads: expected {KNOWN}", code="unsupported_format")
    if isinstance(source, bytes):
        handle, path = tempfile.mkstemp(suffix=f".{kind}")
        with os.fdopen(handle, "wb") as fh:
            fh.write(source)
        cleanup = [lambda: os.unlink(path)]
    else:
        path, cleanup = str(source), []
    try:
        opened = _nd2(path, scene, max_pixels) if kind == "nd2" else _bioio(kind, path, scene, max_pixels)
    except BaseException:
        for step in cleanup:
            step()
        raise
    opened.close = _chain(opened.close, *cleanup)
    return opened


def _chain(*steps):
    def run():
        for step in steps:
            if step is not None:
                step()
    return run


def _bioio(kind: str, path: str, scene: str | int, max_pixels: int) -> Stack:
    if kind == "czi":
        from bioio_czi import Reader
    else:
        from bioio_lif import Reader
    reader = Reader(path)
    scenes = list(reader.scenes)
    index = select_scene(scenes, scene)
    reader.set_scene(index)
    order = reader.dims.order
    sizes = {a: int(n) for a, n in zip(order, reader.shape)}
    rgb = sizes.get("S", 1) in (3, 4) and reader.dtype == np.uint8
    check_plane_bytes({k: v for k, v in sizes.items() if k in "CZYXS"}, reader.dtype, max_pixels)
    names = [str(n) if n else None for n in (reader.channel_names or [])]
    names = names if len(names) == sizes.get("C", 1) else [None] * sizes.get("C", 1)
    pixel_size = reader.physical_pixel_sizes.X

    def load(t: int, z: str | int) -> np.ndarray:
        if rgb:
            planes = reader.get_image_data("ZYXS", T=t, C=0)
            return reduce_z(planes, z, axis=0)
        kept = {a: 0 for a in order if a not in "TCZYX"}
        return reduce_z(reader.get_image_data("CZYX", T=t, **kept), z, axis=1)

    if rgb:
        sizes["C"], names = 3, [None] * 3
    return Stack(kind, sizes, reader.dtype, names, float(pixel_size) if pixel_size and pixel_size > 0 else None,
                 scenes, index, load, rgb=rgb,
                 close=getattr(reader, "close", None))


def _nd2(path: str, scene: str | int, max_pixels: int) -> Stack:
    import nd2

    handle = nd2.ND2File(path)
    try:
        sizes = dict(handle.sizes)
        scenes = [f"position {i}" for i in range(sizes.get("P", 1))]
        index = select_scene(scenes, scene)
        rgb = handle.is_rgb and handle.dtype == np.uint8
        plane = {k: v for k, v in sizes.items() if k in "CZYXS"}
        check_plane_bytes(plane, handle.dtype, max_pixels)
        channel_count = sizes.get("C", 1)
        names = [c.channel.name for c in (handle.metadata.channels or [])] if handle.metadata else []
        names = names if len(names) == channel_count else [None] * channel_count
        voxel = handle.voxel_size()
        pixel_size = float(voxel.x) if voxel and voxel.x and voxel.x > 0 else None
    except BaseException:
        handle.close()
        raise
    axes = list(sizes)
    data = handle.to_dask()

    def load(t: int, z: str | int) -> np.ndarray:
        pick = tuple(t if a == "T" else index if a == "P" else slice(None) if a in "CZYXS" else 0 for a in axes)
        kept = [a for a in axes if a in "CZYXS"]
        array = np.asarray(data[pick])
        for a in "CZ":
            if a not in kept:
                array, kept = array[np.newaxis], [a, *kept]
        array = np.transpose(array, [kept.index(a) for a in "CZYX" + ("S" if "S" in kept else "")])
        planes = reduce_z(array, z, axis=1)
        return planes[0][..., :3] if rgb else planes

    if rgb:
        sizes["C"], names = 3, [None] * 3
    sizes.setdefault("T", 1)
    return Stack("nd2", sizes, handle.dtype, names, pixel_size, scenes, index, load, rgb=rgb, close=handle.close)


def ome_zarr(path: Path, scene: str | int, max_pixels: int) -> Stack:
    """An OME-Zarr image folder (OME-NGFF 0.4/0.5), read with zarr: its full-resolution level, channel labels
    from `omero`, the pixel size from the level's scale (bioio-ome-zarr needs s3fs, as bioio-nd2 does)."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a folder that is not a group
        raise ImageError(f"{path.name} is a folder but not an OME-Zarr image: {exc}",
                         code="unsupported_format") from None
    attrs = dict(group.attrs)
    attrs = attrs.get("ome", attrs)
    if "plate" in attrs or "well" in attrs:
        raise ImageError(f"{path.name} is an OME-Zarr plate or well: give one field's image folder "
                         "(<plate>.zarr/<row>/<column>/<field>)", code="unsupported_format")
    if not attrs.get("multiscales"):
        raise ImageError(f"{path.name} holds no OME-Zarr image (no multiscales metadata)", code="unsupported_format")
    select_scene(["0"], scene)
    multiscale = attrs["multiscales"][0]
    axes = [(a["name"] if isinstance(a, dict) else a).upper() for a in multiscale.get("axes", list("tczyx"))]
    units = {(a["name"].upper() if isinstance(a, dict) else a.upper()): (a.get("unit") if isinstance(a, dict) else None)
             for a in multiscale.get("axes", [])}
    level = multiscale["datasets"][0]
    array = group[level["path"]]
    sizes = {a: int(n) for a, n in zip(axes, array.shape)}
    if "Y" not in sizes or "X" not in sizes:
        raise ImageError(f"{path.name} has no 2-D image (axes {''.join(axes)})", code="unsupported_format")
    check_plane_bytes({k: v for k, v in sizes.items() if k in "CZYX"}, array.dtype, max_pixels)
    channels = sizes.get("C", 1)
    names = [c.get("label") or None for c in attrs.get("omero", {}).get("channels", [])]
    names = names if len(names) == channels else [None] * channels
    scale = next((t["scale"] for t in level.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
    pixel_size = None
    if scale and "X" in axes:
        pixel_size = _to_um(scale[axes.index("X")], units.get("X") or "micrometer")

    def load(t: int, z: str | int) -> np.ndarray:
        pick = tuple(t if a == "T" else slice(None) if a in "CZYX" else 0 for a in axes)
        kept = [a for a in axes if a in "CZYX"]
        planes = np.asarray(array[pick])
        for a in "CZ":
            if a not in kept:
                planes, kept = planes[np.newaxis], [a, *kept]
        planes = np.transpose(planes, [kept.index(a) for a in "CZYX"])
        return reduce_z(planes, z, axis=1)

    sizes.setdefault("T", 1)
    sizes.setdefault("C", 1)
    return Stack("ome-zarr", sizes, array.dtype, names, pixel_size, ["0"], 0, load)
