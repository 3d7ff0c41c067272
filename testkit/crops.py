"""Distinct, realistic upload bytes for volume runs: random crops of real DSB2018 images (by default the test
subset, testkit.data.dsb_dir(); bench/ passes the full set's folder as `root`)."""
from __future__ import annotations

import io
import random
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=64)
def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def crops(n: int, seed: int = 0, min_side: int = 64, max_side: int = 256,
          root: Path | None = None) -> list[tuple[str, bytes]]:
    """`n` (filename, PNG bytes) pairs, each a crop of min_side..max_side pixels at a random offset of a
    real fluorescence image (the kind most DSB images are). Distinct bytes: none is a duplicate upload."""
    from testkit.data import load_index

    rng = random.Random(seed)
    sources = [s for s in load_index(root) if s.kind == "fluorescence" and min(s.width, s.height) >= min_side]
    sources.sort(key=lambda s: s.image_id)
    out, seen = [], set()
    while len(out) < n:
        sample = rng.choice(sources)
        pixels = _pixels(sample.path)
        height, width = pixels.shape[:2]
        side_h = rng.randint(min_side, min(max_side, height))
        side_w = rng.randint(min_side, min(max_side, width))
        top, left = rng.randint(0, height - side_h), rng.randint(0, width - side_w)
        data = png_bytes(np.ascontiguousarray(pixels[top:top + side_h, left:left + side_w]))
        if data in seen:
            continue
        seen.add(data)
        out.append((f"{sample.image_id[:12]}_{top}_{left}_{side_h}x{side_w}.png", data))
    return out


def fixed_size_crop(side: int = 512, seed: int = 0, root: Path | None = None) -> tuple[str, bytes]:
    """One side x side crop (the overhead measurement's image), from a fluorescence image large enough."""
    from testkit.data import load_index

    rng = random.Random(seed)
    sources = sorted((s for s in load_index(root) if s.kind == "fluorescence" and min(s.width, s.height) >= side),
                     key=lambda s: s.image_id)
    sample = rng.choice(sources)
    pixels = _pixels(sample.path)
    top = rng.randint(0, pixels.shape[0] - side)
    left = rng.randint(0, pixels.shape[1] - side)
    return f"{sample.image_id[:12]}_{side}.png", png_bytes(np.ascontiguousarray(pixels[top:top + side, left:left + side]))
