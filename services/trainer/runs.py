"""One training run, start to finish: fine-tune a project's active version on the base set plus that
project's labels (its held-out images excepted), evaluate it beside its parent on the project's
held-out images and the base validation split, publish it, and activate it in that project when the
gate (services.trainer.gate) promotes it.

The run row in SQL is the truth. Weights are written to the object store before their registry
row, and the row (with its activation) is one transaction, so a trainer killed at any point leaves
no half-published version; a redelivered run starts again from the parent.
"""
from __future__ import annotations

import hashlib
import json
import logging
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import select

from shared.infra import registry
from shared.infra.auth import ensure_default_project
from shared.infra.base_set import base_sets
from shared.infra.settings import Settings
from shared.domain.datasets.labelled import LabelledImage, guess_kind
from shared.infra.db.tables import Experiment, Image, JobStatus, Label, TrainingRun
from shared.infra.db.session import write_scope
from shared.domain.imaging.imageio import decode
from shared.infra.storage import ObjectStore

from services.trainer import gate, held_out

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _set(run_id: str, **values) -> None:
    with write_scope() as session:
        run = session.get(TrainingRun, run_id)
        for key, value in values.items():
            setattr(run, key, value)


@dataclass
class UserLabels:
    train: list[tuple[LabelledImage, str]]  # (labelled image, label sha256)
    held_out: list[tuple[LabelledImage, str]]


def user_labels(store: ObjectStore, project_id: int) -> UserLabels:
    """Each labelled image of the project with its newest label, split by its recorded held-out place."""
    with write_scope() as session:
        places = held_out.assign(session, project_id)
        rows = session.execute(select(Label, Image).join(Image, Image.id == Label.image_id)
                               .join(Experiment, Experiment.id == Image.experiment_id)
                               .where(Experiment.project_id == project_id).order_by(Label.created)).all()
        newest = {image.id: (label.object_key, label.sha256, image.object_key, image.channel) for label, image in rows}
    split = UserLabels([], [])
    for image_id, (label_key, label_sha, image_key, channel) in sorted(newest.items()):
        image = decode(store.get(image_key), channel=channel)
        labels = _labels_from(store.get(label_key))
        item = (LabelledImage(image_id, image, labels, guess_kind(image)), label_sha)
        (split.held_out if places.get(image_id) else split.train).append(item)
    return split


def _labels_from(raw: bytes) -> np.ndarray:
    labels = decode(raw)
    return (labels[..., 0] if labels.ndim == 3 else labels).astype(np.uint32)


def _score(weights: bytes, items: list[LabelledImage]) -> dict:
    from shared.domain.evaluation import evaluate
    from shared.domain.model.segmenter import Segmenter

    if not items:
        return {}
    _, summary = evaluate(Segmenter(weights).segment, items)
    return summary["all"]


@dataclass
class _Claimed:
    """A run this trainer has marked running, and the version it fine-tunes."""
    project_id: int
    epochs: int
    force_promote: bool
    parent_version: str
    parent_key: str


@dataclass
class _TrainingData:
    base_train: list[LabelledImage]
    validation: list[LabelledImage]  # the base validation split
    labelled: UserLabels

    @property
    def user_train(self) -> list[LabelledImage]:
        return [item for item, _ in self.labelled.train]

    @property
    def user_eval(self) -> list[LabelledImage]:
        return [item for item, _ in self.labelled.held_out]


def execute(run_id: str, settings: Settings, store: ObjectStore) -> None:
    from shared.domain.model.segmenter import weights_version
    from shared.domain.training.loop import fine_tune

    claimed = _claim(run_id, store)
    if claimed is None:
        return
    parent_raw = store.get(claimed.parent_key)
    data = _training_data(store, settings, claimed.project_id)
    manifest_sha = _manifest_sha256(claimed, data, settings)
    steps = max(1, claimed.epochs * settings.training_steps_per_epoch)
    tuned = fine_tune(parent_raw, data.base_train, data.user_train, settings, steps,
                      seed=zlib.crc32(run_id.encode()) % 10_000, progress=_progress_reporter(run_id))
    version = weights_version(tuned.weights)

    _set(run_id, progress=0.85)
    held = _before_and_after(parent_raw, tuned.weights, data.user_eval)
    base = _before_and_after(parent_raw, tuned.weights, data.validation)
    decided = gate.decide(held, base, settings, force=claimed.force_promote)
    promote = decided.pop("promote")
    summary = {"base_images": len(data.base_train), "user_images": len(data.user_train),
               "user_held_out": len(data.user_eval), "size_model_images": tuned.size_model_images,
               "validation_images": len(data.validation), "steps": steps, "epochs": claimed.epochs}
    # the version's own scores (`validation`, `user_held_out`), and the decision with its before/after numbers
    record = {"validation": base["after"], "user_held_out": held["after"], "parent_version": claimed.parent_version,
              "held_out": held, "base_validation": base, **decided}
    _publish(run_id, store, claimed, version, tuned.weights, record, summary, manifest_sha, promote)
    log.info("training run finished", extra={"run_id": run_id, "version": version, "promoted": promote,
                                             "decision": decided["decision"], "checks": decided["checks"]})


def _claim(run_id: str, store: ObjectStore) -> _Claimed | None:
    """Mark the run running and find the version it starts from (the built-in one registered first if need be);
    None if the run is gone or already over."""
    with write_scope() as session:
        run = session.get(TrainingRun, run_id)
        if run is None or run.status in (JobStatus.done, JobStatus.failed):
            return None
        run.status, run.started, run.progress, run.error = JobStatus.running, _now(), 0.0, None
        if run.project_id is None:
            run.project_id = ensure_default_project(session).id
        builtin_version, builtin_raw = registry.shipped()
        registry.ensure_builtin(session, store, builtin_version, builtin_raw)
        parent = registry.active_version(session, run.project_id)
        return _Claimed(run.project_id, run.epochs, run.force_promote, parent.version, parent.object_key)


def _training_data(store: ObjectStore, settings: Settings, project_id: int) -> _TrainingData:
    labelled = user_labels(store, project_id)
    base_train, validation = base_sets(settings, store)
    if not base_train and not labelled.train:
        raise ValueError("nothing to train on: no base data on this machine and no user labels in the project")
    return _TrainingData(base_train, validation, labelled)


def _manifest_sha256(claimed: _Claimed, data: _TrainingData, settings: Settings) -> str:
    """The digest of what the version was trained from: parent, images, label versions and budget."""
    manifest = {"parent": claimed.parent_version, "project": claimed.project_id,
                "base": sorted(i.name for i in data.base_train),
                "user": sorted((item.name, sha) for item, sha in data.labelled.train),
                "epochs": claimed.epochs, "steps_per_epoch": settings.training_steps_per_epoch}
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _progress_reporter(run_id: str):
    """Training is the first 80 % of the run's progress; written about twenty times, not at every step."""
    def progress(step: int, total: int, info: dict) -> None:
        if step % max(1, total // 20) == 0 or step == total:
            _set(run_id, progress=round(0.8 * step / total, 3))
    return progress


def _before_and_after(parent_raw: bytes, new_raw: bytes, items: list[LabelledImage]) -> dict:
    return {"images": len(items), "before": _score(parent_raw, items), "after": _score(new_raw, items)}


def _publish(run_id: str, store: ObjectStore, claimed: _Claimed, version: str, raw: bytes, record: dict,
             summary: dict, manifest_sha: str, promote: bool) -> None:
    """Register the version (activated if promoted) and finish the run, in one transaction."""
    with write_scope() as session:
        registry.publish(session, store, version, raw, parent=claimed.parent_version, metrics=record,
                         training_summary=summary, manifest_sha256=manifest_sha, project=claimed.project_id)
        if promote:
            registry.activate(session, version, claimed.project_id)
        run = session.get(TrainingRun, run_id)
        run.status, run.finished, run.progress = JobStatus.done, _now(), 1.0
        run.version, run.promoted, run.metrics = version, promote, record


def fail(run_id: str, reason: str) -> None:
    _set(run_id, status=JobStatus.failed, error=reason[:2000], finished=_now())
