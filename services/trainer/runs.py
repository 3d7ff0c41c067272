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


def execute(run_id: str, settings: Settings, store: ObjectStore) -> None:
    from shared.domain.model.segmenter import weights_version
    from shared.domain.training.loop import fine_tune

    with write_scope() as session:
        run = session.get(TrainingRun, run_id)
        if run is None or run.status in (JobStatus.done, JobStatus.failed):
            return
        run.status, run.started, run.progress, run.error = JobStatus.running, _now(), 0.0, None
        epochs, force = run.epochs, run.force_promote
        if run.project_id is None:
            run.project_id = ensure_default_project(session).id
        project_id = run.project_id
        builtin_version, builtin_raw = registry.shipped()
        registry.ensure_builtin(session, store, builtin_version, builtin_raw)
        parent = registry.active_version(session, project_id)
        parent_version, parent_key = parent.version, parent.object_key
    parent_raw = store.get(parent_key)

    labelled = user_labels(store, project_id)
    user_train = [item for item, _ in labelled.train]
    user_eval = [item for item, _ in labelled.held_out]
    base_train, validation = base_sets(settings, store)
    if not base_train and not user_train:
        raise ValueError("nothing to train on: no base data on this machine and no user labels in the project")

    manifest = {"parent": parent_version, "project": project_id, "base": sorted(i.name for i in base_train),
                "user": sorted((item.name, sha) for item, sha in labelled.train),
                "epochs": epochs, "steps_per_epoch": settings.training_steps_per_epoch}
    manifest_sha = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()

    steps = max(1, epochs * settings.training_steps_per_epoch)

    def progress(step: int, total: int, info: dict) -> None:
        if step % max(1, total // 20) == 0 or step == total:
            _set(run_id, progress=round(0.8 * step / total, 3))

    tuned = fine_tune(parent_raw, base_train, user_train, settings, steps, seed=zlib.crc32(run_id.encode()) % 10_000,
                      progress=progress)
    new_raw = tuned.weights
    version = weights_version(new_raw)

    _set(run_id, progress=0.85)
    held = {"images": len(user_eval), "before": _score(parent_raw, user_eval), "after": _score(new_raw, user_eval)}
    base = {"images": len(validation), "before": _score(parent_raw, validation), "after": _score(new_raw, validation)}
    decided = gate.decide(held, base, settings, force=force)
    promote = decided.pop("promote")
    summary = {"base_images": len(base_train), "user_images": len(user_train), "user_held_out": len(user_eval),
               "size_model_images": tuned.size_model_images,
               "validation_images": len(validation), "steps": steps, "epochs": epochs}
    # the version's own scores (`validation`, `user_held_out`), and the decision with its before/after numbers
    record = {"validation": base["after"], "user_held_out": held["after"], "parent_version": parent_version,
              "held_out": held, "base_validation": base, **decided}

    with write_scope() as session:
        registry.publish(session, store, version, new_raw, parent=parent_version, metrics=record,
                         training_summary=summary, manifest_sha256=manifest_sha, project=project_id)
        if promote:
            registry.activate(session, version, project_id)
        run = session.get(TrainingRun, run_id)
        run.status, run.finished, run.progress = JobStatus.done, _now(), 1.0
        run.version, run.promoted, run.metrics = version, promote, record
    log.info("training run finished", extra={"run_id": run_id, "version": version, "promoted": promote,
                                             "decision": decided["decision"], "checks": decided["checks"]})


def fail(run_id: str, reason: str) -> None:
    _set(run_id, status=JobStatus.failed, error=reason[:2000], finished=_now())
