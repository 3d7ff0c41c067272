"""The base training set and the fixed validation split that a training run mixes with user labels.

They come from a folder on this machine when there is one (NUCLEUS_TRAINING_BASE_DIR, or the DSB folder under
NUCLEUS_DATA_ROOT, default ../shared/data beside a checkout), else from the copy `nucleus dataset import` stored
in the object store, which a pip or docker deployment has instead. In the object store, under datasets/<name>/:

- images/<file>, labels/<file>: each image and its label image (a competition-layout set is stored with its
  per-nucleus masks turned into one label TIFF);
- manifest.json, written last, so that a set is never seen half imported: {"name", "created", "images":
  {name: {"image", "labels" (keys), "image_sha256", "labels_sha256", "kind"}}, "validation": [names]}.

A trainer copies the set once into a local cache folder and afterwards fetches only what changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from shared.domain.datasets.labelled import (LabelledImage, default_dsb_dir, find_image, is_pairs_layout, iter_labelled, kind_hints,
                             list_names, load, validation_names)
from shared.infra.storage import ObjectNotFound, ObjectStore

PREFIX = "datasets"
MANIFEST = "manifest.json"


def manifest_key(name: str) -> str:
    return f"{PREFIX}/{name}/{MANIFEST}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(store: ObjectStore, name: str) -> dict | None:
    try:
        return json.loads(store.get(manifest_key(name)))
    except ObjectNotFound:
        return None


def stored_names(store: ObjectStore) -> list[str]:
    """Names of the sets in the object store that finished importing."""
    return sorted(key.split("/")[1] for key in store.list(f"{PREFIX}/") if key.endswith(f"/{MANIFEST}")
                  and key.count("/") == 2)


@dataclass
class ImportReport:
    name: str
    images: int
    validation: int
    uploaded: int  # files written; 0 when the set was already there unchanged
    unchanged: int
    manifest_changed: bool


def _files_of(root: Path, name: str) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """(image file name, bytes), (label file name, bytes) of one labelled image, as stored."""
    if is_pairs_layout(root):
        image_path, label_path = find_image(root / "images", name), find_image(root / "labels", name)
        if image_path is None or label_path is None:
            raise FileNotFoundError(f"{name}: image or label image missing under {root}")
        return (image_path.name, image_path.read_bytes()), (label_path.name, label_path.read_bytes())
    from shared.domain.outputs import labels_tiff

    item = load(root, name, hints={})
    image_path = find_image(root / name / "images", name)
    return (image_path.name, image_path.read_bytes()), (f"{name}.tif", labels_tiff(item.labels))


def import_set(root: Path, store: ObjectStore, name: str = "base", validation: list[str] | None = None,
               progress=None) -> ImportReport:
    """Store the labelled set in `root` (either layout of shared.domain.datasets.labelled) under `name`, with the names of its
    images that form the fixed validation split (default: the committed DSB2018 split). Importing the same
    folder again uploads nothing; a changed file is uploaded again."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    names = list_names(root)
    if not names:
        raise ValueError(f"{root} holds no labelled images (images/ + labels/, or <id>/images + <id>/masks)")
    hints = kind_hints(root)
    previous = (read_manifest(store, name) or {}).get("images", {})
    entries, uploaded, unchanged = {}, 0, 0
    for i, image_name in enumerate(names):
        files = _files_of(root, image_name)
        entry = {}
        for role, (filename, data) in zip(("image", "labels"), files):
            key, sha = f"{PREFIX}/{name}/{role if role == 'labels' else 'images'}/{filename}", _sha256(data)
            before = previous.get(image_name, {})
            if before.get(role) == key and before.get(f"{role}_sha256") == sha and store.exists(key):
                unchanged += 1
            else:
                store.put(key, data)
                uploaded += 1
            entry[role], entry[f"{role}_sha256"] = key, sha
        if image_name in hints:
            entry["kind"] = hints[image_name]
        entries[image_name] = entry
        if progress:
            progress(i + 1, len(names))
    held_out = [n for n in (validation_names() if validation is None else validation) if n in entries]
    manifest = {"name": name, "images": entries, "validation": held_out}
    old = read_manifest(store, name)
    changed = old is None or {k: old.get(k) for k in manifest} != manifest
    if changed:
        manifest["created"] = datetime.now(timezone.utc).isoformat()
        store.put(manifest_key(name), json.dumps(manifest, indent=1, sort_keys=True).encode(), "application/json")
    return ImportReport(name, len(entries), len(held_out), uploaded, unchanged, changed)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def cache_folder(settings) -> Path:
    return Path(settings.training_cache_dir or settings.data_dir / "cache" / PREFIX).resolve()


def sync_to_cache(store: ObjectStore, name: str, cache_root: Path) -> tuple[Path, dict] | None:
    """Copy the stored set `name` into cache_root/<name> (pairs layout), fetching only files that are missing or
    changed; (its folder, its manifest), or None when the object store has no such set."""
    manifest = read_manifest(store, name)
    if manifest is None:
        return None
    folder = Path(cache_root) / name
    local_manifest = folder / MANIFEST
    cached = json.loads(local_manifest.read_text()).get("images", {}) if local_manifest.is_file() else {}
    for image_name, entry in manifest["images"].items():
        for role, sub in (("image", "images"), ("labels", "labels")):
            key, sha = entry[role], entry[f"{role}_sha256"]
            path = folder / sub / key.rsplit("/", 1)[1]
            if cached.get(image_name, {}).get(f"{role}_sha256") == sha and path.is_file():
                continue
            data = store.get(key)
            if _sha256(data) != sha:
                raise ValueError(f"object {key} does not match its manifest (sha256 differs)")
            _write_atomic(path, data)
    _write_atomic(local_manifest, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return folder, manifest


def base_sets(settings, store: ObjectStore | None) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(base training images, fixed validation images): from the local base folder when this machine has one,
    else from the object store's imported set (cached locally); ([], []) when there is neither."""
    root = Path(settings.training_base_dir or default_dsb_dir())
    if root.is_dir():
        available, held_out, hints = list_names(root), validation_names(), kind_hints(root)
    else:
        synced = sync_to_cache(store, settings.training_base_set, cache_folder(settings)) if store else None
        if synced is None:
            return [], []
        root, manifest = synced
        available, held_out = sorted(manifest["images"]), manifest["validation"]
        hints = {n: e["kind"] for n, e in manifest["images"].items() if e.get("kind")}
    present, excluded = set(available), set(held_out)
    train_names = [n for n in available if n not in excluded][: settings.training_base_limit or None]
    val_names = [n for n in held_out if n in present][: settings.training_validation_limit or None]
    return list(iter_labelled(root, train_names, hints)), list(iter_labelled(root, val_names, hints))
