"""The model registry: versioned weights in the object store, one row each, exactly one active.

The shipped weights are registered on first use as the root version, so that rolling back to
them works like rolling back to any other version.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.db.models import ModelVersion
from shared.storage import ObjectStore

MODELS_PREFIX = "models/"
# Must match shared.model.segmenter.SHIPPED_WEIGHTS; repeated here so that reading it needs no torch.
SHIPPED_WEIGHTS = "nucleus-dsb2018.pt"
VERSION_SIDECAR_SUFFIX = ".version"


def object_key(version: str) -> str:
    return f"{MODELS_PREFIX}{version}.pt"


def shipped_weights_file() -> Path:
    """The default weights, the root of every lineage: settings.weights_path when set (as the worker
    uses it when no version is active), else the file shipped inside the package."""
    from shared.config import get_settings

    configured = get_settings().weights_path
    return Path(configured) if configured else Path(str(resources.files("shared.weights").joinpath(SHIPPED_WEIGHTS)))


def sidecar_path(weights: Path) -> Path:
    """`x.pt` -> `x.version`: the version string of those weights, written when they are exported, so
    that processes without torch (the API) can name them."""
    return Path(weights).with_suffix(VERSION_SIDECAR_SUFFIX)


def sidecar_version(weights: Path, raw: bytes | None = None) -> str | None:
    """The version in the weights' sidecar, or None when there is none. Given the weights' bytes, also
    None when the sidecar is stale (versions end in the first 8 hex digits of the weights' SHA-256)."""
    try:
        version = sidecar_path(weights).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not version:
        return None
    if raw is not None and not version.endswith("-" + hashlib.sha256(raw).hexdigest()[:8]):
        return None
    return version


def shipped() -> tuple[str, bytes]:
    """(version, weights) of the model that ships inside the package."""
    path = shipped_weights_file()
    raw = path.read_bytes()
    version = sidecar_version(path, raw)
    if version is None:
        from shared.model.segmenter import weights_version

        version = weights_version(raw)
    return version, raw


def shipped_sidecar_version() -> str | None:
    """The shipped weights' version as their sidecar names it (torch-free, unchecked: cheap)."""
    return sidecar_version(shipped_weights_file())


def register_shipped(session: Session, store: ObjectStore) -> ModelVersion | None:
    """Register the shipped weights without torch when their sidecar names them and matches their
    bytes; None otherwise (the trainer registers them on its first run)."""
    path = shipped_weights_file()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    version = sidecar_version(path, raw)
    if version is None:
        return None
    return ensure_builtin(session, store, version, raw)


def active(session: Session) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).first()


def ensure_builtin(session: Session, store: ObjectStore, version: str, raw: bytes) -> ModelVersion:
    """Register the shipped weights (idempotent); they become active if nothing else is."""
    row = session.get(ModelVersion, version)
    if row is None:
        key = object_key(version)
        if not store.exists(key):
            store.put(key, raw)
        row = ModelVersion(version=version, parent=None, object_key=key, sha256=hashlib.sha256(raw).hexdigest(),
                           training_summary={"source": "shipped with nucleus", "data": "DSB2018 stage 1 training split"},
                           metrics={}, active=False)
        session.add(row)
        session.flush()
    if active(session) is None:
        row.active = True
    return row


def publish(session: Session, store: ObjectStore, version: str, raw: bytes, parent: str | None,
            metrics: dict, training_summary: dict, manifest_sha256: str) -> ModelVersion:
    """Store the weights, then add the row: a crash in between leaves an unreferenced object, never a row
    without weights."""
    key = object_key(version)
    store.put(key, raw)
    row = session.get(ModelVersion, version)
    if row is None:
        row = ModelVersion(version=version, parent=parent, object_key=key, sha256=hashlib.sha256(raw).hexdigest(),
                           manifest_sha256=manifest_sha256, training_summary=training_summary, metrics=metrics,
                           active=False)
        session.add(row)
        session.flush()
    return row


def activate(session: Session, version: str) -> ModelVersion:
    row = session.get(ModelVersion, version)
    if row is None:
        raise KeyError(version)
    session.execute(update(ModelVersion).where(ModelVersion.version != version).values(active=False))
    row.active = True
    session.flush()
    return row
