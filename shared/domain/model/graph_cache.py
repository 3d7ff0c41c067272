"""The folder (NUCLEUS_GRAPH_CACHE_DIR) where exported ONNX graphs are kept between processes, each beside the
record of what else a segmenter needs to run them (shared.domain.model.onnx_inference), so that a later process can
segment without importing torch. Torch-free.

A graph is named by the weights, the graph kind, the model code and the torch version that exported it; a
record also by the device, precision and runtime asked for and by the machine, since whether those resolve to
the ONNX runtime depends on the machine's GPU and instructions (shared.domain.model.runtime.resolve).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from functools import lru_cache
from importlib import metadata
from pathlib import Path

KEPT = 16  # graphs, and as many records: a few weights versions, each with its network and its encoder


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of the model code (shared/domain/model/*.py) and the torch version: an exported graph depends on both."""
    digest = hashlib.sha256(metadata.version("torch").encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def graph_file(folder: Path, weights: str, kind: str, maps: bool) -> Path:
    """Where the graph of kind `kind` ("unet", "style") of the weights whose digest is `weights` is kept."""
    key = hashlib.sha256(f"{weights} {kind} {maps} {code_digest()}".encode())
    return Path(folder) / f"{kind}-{key.hexdigest()[:32]}.onnx"


def _machine() -> str:
    """What, besides the settings, decides the runtime here: which host, and which GPUs it shows."""
    return " ".join([socket.gethostname(), os.environ.get("CUDA_VISIBLE_DEVICES", "-"),
                     str(os.path.exists("/dev/nvidiactl"))])


def record_file(folder: Path, weights: str, device: str | None, precision: str, runtime: str) -> Path:
    key = hashlib.sha256(f"{weights} {device} {precision} {runtime} {_machine()} {code_digest()}".encode())
    return Path(folder) / f"segmenter-{key.hexdigest()[:32]}.json"


def read(path: Path) -> bytes | None:
    """A kept file's bytes (marked recently used), or None when it is not there."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        os.utime(path)  # recently used: kept when the folder is pruned
    except OSError:
        pass
    return raw


def read_record(path: Path) -> dict | None:
    raw = read(path)
    try:
        return json.loads(raw) if raw else None
    except ValueError:  # damaged: the torch path writes it again
        return None


def write(path: Path, raw: bytes) -> None:
    """Keep `raw` at `path`, whole or not at all whatever other processes do; an unwritable cache only costs
    the work again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(raw)
        os.replace(partial, path)
        prune(path.parent, f"*{path.suffix}")
    except OSError:
        pass


def prune(folder: Path, pattern: str = "*.onnx", keep: int = KEPT) -> None:
    """Remove all but the `keep` most recently used files matching `pattern` (older weights or code leave
    theirs behind)."""
    kept = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[keep:]:
        old.unlink(missing_ok=True)
