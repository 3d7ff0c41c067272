"""The model registry: versioned weights in the object store, one row each, and the model line of
each project: its active version (`active_version`, the one answer to that question for the worker,
the trainer and the API).

A project without a row of its own follows the `default` project; before the `default` project's
version changes, every such project is pinned to the version it was using, so that a promotion in one
project never changes another project's results. The shipped weights are registered on first use as the
root version, so that rolling back to them works like rolling back to any other version.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.infra.auth import DEFAULT_PROJECT, ensure_default_project
from shared.infra.db.tables import Experiment, Image, Job, ModelVersion, Project, ProjectModel, utcnow
from shared.infra.storage import ObjectStore
from shared.domain.model.weights_file import shipped_weights_path, sidecar_version, weights_digest

MODELS_PREFIX = "models/"



def object_key(version: str) -> str:
    return f"{MODELS_PREFIX}{version}.pt"


def shipped_weights_file() -> Path:
    """The default weights, the root of every lineage: settings.weights_path when set (as the worker
    uses it when no version is active), else the file shipped inside the package."""
    from shared.infra.settings import get_settings

    configured = get_settings().weights_path
    return Path(configured) if configured else shipped_weights_path()


def shipped() -> tuple[str, bytes]:
    """(version, weights) of the model that ships inside the package."""
    path = shipped_weights_file()
    raw = path.read_bytes()
    version = sidecar_version(path, raw)
    if version is None:
        from shared.domain.model.segmenter import weights_version

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


def project_id(session: Session, project: int | str | Project | None) -> int | None:
    """A project's id from its id, name or row; None for an unknown name (or None)."""
    if project is None or isinstance(project, int):
        return project
    if isinstance(project, Project):
        return project.id
    return session.scalar(select(Project.id).where(Project.name == project))


def _default_id(session: Session) -> int | None:
    return project_id(session, DEFAULT_PROJECT)


def active_version(session: Session, project: int | str | Project | None = None) -> ModelVersion | None:
    """The version that segments `project`'s images (None: the `default` project): its own row, else the
    `default` project's. None when neither has one (the shipped weights, not yet registered)."""
    pid = project_id(session, project) if project is not None else None
    for candidate in (pid, _default_id(session)):
        if candidate is None:
            continue
        version = session.scalar(select(ProjectModel.version).where(ProjectModel.project_id == candidate))
        if version is not None:
            return session.get(ModelVersion, version)
    return None


def version_for_job(session: Session, job_id: str) -> tuple[ModelVersion | None, str | None]:
    """(version, the name it asked for) for a segmentation job: the version it names (a re-segmentation;
    None when that name is unknown), else (its project's active version, None). KeyError for an unknown job."""
    found = session.execute(select(Job.model_version, Experiment.project_id)
                            .join(Image, Image.id == Job.image_id)
                            .join(Experiment, Experiment.id == Image.experiment_id)
                            .where(Job.id == job_id)).first()
    if found is None:
        raise KeyError(job_id)
    if found.model_version:
        return session.get(ModelVersion, found.model_version), found.model_version
    return active_version(session, found.project_id), None


def ensure_builtin(session: Session, store: ObjectStore, version: str, raw: bytes) -> ModelVersion:
    """Register the shipped weights (idempotent); they become the `default` project's version if it has none."""
    row = session.get(ModelVersion, version)
    if row is None:
        key = object_key(version)
        if not store.exists(key):
            store.put(key, raw)
        row = ModelVersion(version=version, parent=None, object_key=key, sha256=weights_digest(raw),
                           training_summary={"source": "shipped with nucleus", "data": "DSB2018 stage 1 training split"},
                           metrics={})
        session.add(row)
        session.flush()
    if active_version(session) is None:
        activate(session, version)
    return row


def publish(session: Session, store: ObjectStore, version: str, raw: bytes, parent: str | None,
            metrics: dict, training_summary: dict, manifest_sha256: str, project: int | None = None) -> ModelVersion:
    """Store the weights, then add the row: a crash in between leaves an unreferenced object, never a row
    without weights."""
    key = object_key(version)
    store.put(key, raw)
    row = session.get(ModelVersion, version)
    if row is None:
        row = ModelVersion(version=version, parent=parent, object_key=key, sha256=weights_digest(raw),
                           manifest_sha256=manifest_sha256, training_summary=training_summary, metrics=metrics,
                           project_id=project)
        session.add(row)
        session.flush()
    return row


def activate(session: Session, version: str, project: int | str | Project | None = None) -> ModelVersion:
    """Make `version` the active one in `project` (None: the `default` project, created if missing).
    KeyError for an unknown version or project."""
    row = session.get(ModelVersion, version)
    if row is None:
        raise KeyError(version)
    pid = project_id(session, project) if project is not None else None
    if project is not None and pid is None:
        raise KeyError(project)
    default_id = _default_id(session)
    if default_id is None and pid is None:
        default_id = ensure_default_project(session).id
    pid = default_id if pid is None else pid
    if pid == default_id:
        _pin_followers(session, default_id)
    current = session.get(ProjectModel, pid)
    if current is None:
        session.add(ProjectModel(project_id=pid, version=version, activated=utcnow()))
    elif current.version != version:
        current.version, current.activated = version, utcnow()
    session.flush()
    return row


def _pin_followers(session: Session, default_id: int) -> None:
    """Give every project that follows the `default` project a row of its own with the version it uses now."""
    following = active_version(session, default_id)
    if following is None:
        return
    pinned = select(ProjectModel.project_id)
    for pid in session.scalars(select(Project.id).where(Project.id != default_id, Project.id.not_in(pinned))):
        session.add(ProjectModel(project_id=pid, version=following.version, activated=utcnow()))
    session.flush()
