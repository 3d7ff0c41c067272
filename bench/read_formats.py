"""Read time per microscope file format through shared.domain.imaging.reading (the path uploads, workers and `nucleus segment`
take): the same two-channel 16-bit field written as OME-TIFF, ImageJ TIFF, plain TIFF and CZI, and its
nuclear channel as 16-bit PNG and 8-bit JPEG; plus a Z stack read with z=max.

    python bench/read_formats.py [--size 2048] [--repeat 3] [--z 5]

Prints one line per format: file size, first read (imports included) and the best of --repeat further reads,
from bytes (an upload) and from a path (the command line). ND2 and LIF have no writer in Python, so they
are not timed here.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def field(size: int, rng) -> np.ndarray:
    """Two channels: Hoechst-like discs on a dim background, and a marker in some of them."""
    from skimage.draw import disk

    planes = rng.integers(80, 120, (2, size, size), dtype=np.uint16)
    for _ in range(size * size // 900):
        rr, cc = disk(tuple(rng.integers(0, size, 2)), rng.integers(6, 14), shape=(size, size))
        planes[0][rr, cc] = rng.integers(1500, 4000)
        planes[1][rr, cc] = rng.integers(100, 3000) if rng.random() < 0.4 else 110
    return planes


def write_all(planes: np.ndarray, z: int, folder: Path) -> dict[str, tuple[Path, dict]]:
    import tifffile
    from PIL import Image

    files = {}
    meta = {"axes": "CYX", "Channel": {"Name": ["Hoechst", "EdU"]}, "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.325}
    files["ome-tiff"] = (folder / "field.ome.tif", {"channel": "Hoechst"})
    tifffile.imwrite(files["ome-tiff"][0], planes, ome=True, photometric="minisblack", metadata=meta)
    files["ome-tiff zlib"] = (folder / "field.zlib.ome.tif", {"channel": "Hoechst"})
    tifffile.imwrite(files["ome-tiff zlib"][0], planes, ome=True, photometric="minisblack", metadata=meta,
                     compression="zlib", tile=(512, 512))
    files["imagej tiff"] = (folder / "field.imagej.tif", {"channel": 0})
    tifffile.imwrite(files["imagej tiff"][0], planes, imagej=True, metadata={"axes": "CYX", "unit": "um"},
                     resolution=(1 / 0.325, 1 / 0.325))
    files["plain tiff (1 ch)"] = (folder / "field.tif", {})
    tifffile.imwrite(files["plain tiff (1 ch)"][0], planes[0])
    files["png 16-bit (1 ch)"] = (folder / "field.png", {})
    Image.fromarray(planes[0]).save(files["png 16-bit (1 ch)"][0], format="PNG")
    files["jpeg 8-bit (1 ch)"] = (folder / "field.jpg", {})
    Image.fromarray((planes[0] >> 4).astype(np.uint8)).save(files["jpeg 8-bit (1 ch)"][0], format="JPEG", quality=95)
    stack = np.stack([planes] * z, axis=1)  # C Z Y X
    files[f"ome-tiff z={z} (max)"] = (folder / "stack.ome.tif", {"channel": "Hoechst", "z": "max"})
    tifffile.imwrite(files[f"ome-tiff z={z} (max)"][0], stack, ome=True, photometric="minisblack",
                     metadata={**meta, "axes": "CZYX"})
    try:
        from pylibCZIrw import czi as pyczi

        files["czi (bioio)"] = (folder / "field.czi", {"channel": "Hoechst"})
        with pyczi.create_czi(str(files["czi (bioio)"][0]), exist_ok=True) as writer:
            for c in range(2):
                writer.write(data=planes[c], plane={"C": c, "Z": 0, "T": 0})
            writer.write_metadata(document_name="field", channel_names={0: "Hoechst", 1: "EdU"},
                                  scale_x=0.325e-6, scale_y=0.325e-6)
    except ImportError:
        pass
    return files


def timed(read, repeat: int) -> tuple[float, float]:
    started = time.perf_counter()
    read()
    first = time.perf_counter() - started
    best = min(_once(read) for _ in range(repeat))
    return first, best


def _once(read) -> float:
    started = time.perf_counter()
    read()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="field width and height in pixels")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--z", type=int, default=5, help="planes of the Z-stack file")
    args = parser.parse_args()

    from shared.domain.imaging.read_options import ReadOptions
    from shared.domain.imaging.reading import read_picture

    planes = field(args.size, np.random.default_rng(0))
    print(f"{args.size}x{args.size} field, 2 channels uint16; best of {args.repeat} after a first read")
    print(f"{'format':24} {'MB':>7} {'first s':>8} {'bytes s':>8} {'path s':>8}  check")
    with tempfile.TemporaryDirectory() as folder:
        for name, (path, options) in write_all(planes, args.z, Path(folder)).items():
            opts = ReadOptions(**options)
            data = path.read_bytes()
            first, from_bytes = timed(lambda: read_picture(data, opts), args.repeat)
            _first, from_path = timed(lambda: read_picture(path, opts), args.repeat)
            picture = read_picture(path, opts)
            check = f"{picture.nuclear.shape} {picture.channel_names} px={picture.pixel_size_um}"
            print(f"{name:24} {len(data) / 1e6:7.1f} {first:8.3f} {from_bytes:8.3f} {from_path:8.3f}  {check}")


if __name__ == "__main__":
    main()
