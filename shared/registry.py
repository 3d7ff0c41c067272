"""The model registry: versioned weights in the object store, one row each, exactly one active.

The shipped weights are registered on first use as the root version, so that rolling back to
them works like rolling back to any other version.
"""
from __future__ import annotations

import hashlib

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.db.models import ModelVersion
from shared.storage import ObjectStore

MODELS_PREFIX = "models/"


def object_key(version: str) -> str:
    return f"{MODELS_PREFIX}{version}.pt"


def shipped() -> tuple[str, bytes]:
    """(version, weights) of the model that ships inside the package."""
    from shared.model.segmenter import shipped_weights_path, weights_version

    raw = shipped_weights_path().read_bytes()
    return weights_version(raw), raw


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
