"""Microscope vendors' files: Zeiss CZI through bioio's reader plugin, Leica LIF through liffile, Nikon ND2 through
the nd2 library and OME-Zarr folders through zarr (bioio-nd2 and bioio-ome-zarr need s3fs, whose botocore pin
conflicts with the boto3 that moto brings to the tests; bioio-lif fails on LAS X lambda and XZ scans). Each hands
shared.domain.imaging.reading a Stack whose shape and type come from the metadata; pixels load only for the chosen time
point, once that shape has passed the limits.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from shared.domain.imaging.errors import ImageError
from shared.domain.imaging.stack import Stack, check_plane_bytes, reduce_z, select_scene, to_um

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
        opened = {"nd2": _nd2, "lif": _lif, "czi": _czi}[kind](path, scene, max_pixels)
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


def _czi(path: str, scene: str | int, max_pixels: int) -> Stack:
    from bioio_czi import Reader

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
    return Stack("czi", sizes, reader.dtype, names, float(pixel_size) if pixel_size and pixel_size > 0 else None,
                 scenes, index, load, rgb=rgb,
                 close=getattr(reader, "close", None))


LIF_SPECTRAL = ("λ", "Λ")  # liffile's axes of a lambda scan: emission and excitation wavelengths


def _lif(path: str, scene: str | int, max_pixels: int) -> Stack:
    """A LIF image (scene) through liffile: one time point's frames are read; the wavelengths of a lambda scan
    with no channel axis are its channels; an XZ scan stepped along Y is read as a Z stack of XY planes."""
    import liffile

    lif = liffile.LifFile(path)
    try:
        images = list(lif.images)
        scenes = [image.path for image in images]
        index = select_scene(scenes, scene)
        image = images[index]
        sizes = dict(image.sizes)
        if "Y" not in sizes or "X" not in sizes:
            raise ImageError(f"LIF scene {scenes[index]!r} has no XY plane (axes {' '.join(image.dims)}, an XZ or "
                             f"line scan); the file's scenes are {', '.join(scenes)}", code="unsupported_format")
        spectral = next((a for a in LIF_SPECTRAL if a in sizes), None) if "C" not in sizes else None
        channel_axis = spectral or "C"
        rgb = sizes.get("S", 1) in (3, 4) and image.dtype == np.uint8
        plane = {a: sizes.get(channel_axis if a == "C" else a, 1) for a in "CZYXS"}
        check_plane_bytes(plane, image.dtype, max_pixels)
        if spectral:
            names = [f"{spectral} {w * 1e9:.0f} nm" for w in image.coords[spectral]]
        else:
            names = [d.get("LUTName") or None for d in image.xml_element.iter("ChannelDescription")]
        names = names if len(names) == plane["C"] else [None] * plane["C"]
        x = image.coords.get("X")
        pixel_size = to_um(abs(x[1] - x[0]), "m") if x is not None and len(x) > 1 else None
        frame_axes = set(image.frames.frame_sizes)
    except BaseException:
        lif.close()
        raise
    # any other axis (tiles of a mosaic, a rotation...) gives its first frame, as in a TIFF
    fixed = {a: 0 for a in sizes if a not in "TZYXS" and a != channel_axis and a not in frame_axes}

    def load(t: int, z: str | int) -> np.ndarray:
        selection = {**fixed, **({"T": t} if "T" in sizes else {})}
        frames = image.frames(**selection) if selection else image.frames
        array, axes = frames.asarray(), list(frames.dims)
        for a in (channel_axis, "Z"):
            if a not in axes:
                array, axes = array[np.newaxis], [a, *axes]
        order = [channel_axis, "Z", "Y", "X"] + (["S"] if "S" in axes else [])
        array = np.transpose(array, [axes.index(a) for a in order])
        if rgb:
            return reduce_z(array[0], z, axis=0)[..., :3]
        return reduce_z(array, z, axis=1)

    stack_sizes = {"T": sizes.get("T", 1), "C": 3 if rgb else plane["C"], "Z": sizes.get("Z", 1),
                   "Y": sizes["Y"], "X": sizes["X"]}
    return Stack("lif", stack_sizes, image.dtype, [None] * 3 if rgb else names, pixel_size, scenes, index, load,
                 rgb=rgb, close=lif.close)


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
    # frame by frame rather than through nd2's dask array: importing dask costs about a second per process
    shape = [sizes.get(a, 1) for a in "CZYXS"]

    def load(t: int, z: str | int) -> np.ndarray:
        wanted = {"T": t, "P": index}
        array = np.zeros(shape, handle.dtype)
        for number, at in enumerate(handle.loop_indices):
            if any(at.get(a, 0) != wanted.get(a, 0) for a in at if a not in "CZ") or z not in ("max", at.get("Z", 0)):
                continue
            frame = handle.read_frame(number)  # C Y X S with its size-1 axes squeezed out
            if "C" in at:  # a legacy file stores each channel as its own frame
                array[at["C"], at.get("Z", 0)] = frame.reshape(shape[2:])
            else:
                array[:, at.get("Z", 0)] = frame.reshape([shape[0], *shape[2:]])
        planes = reduce_z(array, z, axis=1)
        return planes[0][..., :3] if rgb else planes[..., 0]

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
        pixel_size = to_um(scale[axes.index("X")], units.get("X") or "micrometer")

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
