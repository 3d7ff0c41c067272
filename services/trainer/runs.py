"""One training run, start to finish: fine-tune the active model on the base set plus every user
label, evaluate it beside its parent, publish it, and promote it only if it does not regress.

The run row in SQL is the truth. Weights are written to the object store before their registry
row, and the row (with its activation) is one transaction, so a trainer killed at any point leaves
no half-published version; a redelivered run starts again from the parent.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import tempfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared import registry
from shared.config import Settings
from shared.datasets import LabelledImage, default_dsb_dir, guess_kind, iter_labelled, list_names, validation_names
from shared.db.models import Image, JobStatus, Label, TrainingRun
from shared.db.session import session_scope
from shared.jobs import write_scope
from shared.imageio import decode
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

HELD_OUT_EVERY = 5  # one user-labelled image in five is kept for evaluation, chosen by a stable hash
# Images the new version's size model is fitted on (shared.model.size): five encoder passes each, about a minute
# for 300 on two CPU cores, and as good as all 563 DSB2018 training images (cross-validated; 200 err a tenth more).
SIZE_FIT_IMAGES = 300


def _now() -> datetime:
    return datetime.now(timezone.utc)


def is_held_out(image_id: str) -> bool:
    return zlib.crc32(image_id.encode()) % HELD_OUT_EVERY == 0


def _set(run_id: str, **values) -> None:
    with write_scope() as session:
        run = session.get(TrainingRun, run_id)
        for key, value in values.items():
            setattr(run, key, value)


def user_labels(store: ObjectStore) -> list[tuple[LabelledImage, str]]:
    """Every image's newest label, as (labelled image, label sha256)."""
    with session_scope() as session:
        rows = session.query(Label, Image).join(Image, Image.id == Label.image_id).order_by(Label.created).all()
        newest = {image.id: (label.object_key, label.sha256, image.object_key, image.channel) for label, image in rows}
    items = []
    for image_id, (label_key, label_sha, image_key, channel) in sorted(newest.items()):
        image = decode(store.get(image_key), channel=channel)
        labels = _labels_from(store.get(label_key))
        items.append((LabelledImage(image_id, image, labels, guess_kind(image)), label_sha))
    return items


def _labels_from(raw: bytes) -> np.ndarray:
    labels = decode(raw)
    return (labels[..., 0] if labels.ndim == 3 else labels).astype(np.uint32)


def base_sets(settings: Settings) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(base training images, fixed validation images) when the base set is on this machine."""
    root = settings.training_base_dir or default_dsb_dir()
    if not Path(root).is_dir():
        return [], []
    available = list_names(root)
    held_out = set(validation_names())
    train_names = [n for n in available if n not in held_out][: settings.training_base_limit or None]
    val_names = [n for n in validation_names() if n in set(available)][: settings.training_validation_limit or None]
    return list(iter_labelled(root, train_names)), list(iter_labelled(root, val_names))


def _score(weights: bytes, items: list[LabelledImage]) -> dict:
    from shared.evaluation import evaluate
    from shared.model.segmenter import Segmenter

    if not items:
        return {}
    _, summary = evaluate(Segmenter(weights).segment, items)
    return summary["all"]


def execute(run_id: str, settings: Settings, store: ObjectStore) -> None:
    from shared.model.segmenter import export_weights, fine_tuning_config, weights_version
    from shared.training import TrainConfig, prepare, train

    with write_scope() as session:
        run = session.get(TrainingRun, run_id)
        if run is None or run.status in (JobStatus.done, JobStatus.failed):
            return
        run.status, run.started, run.progress, run.error = JobStatus.running, _now(), 0.0, None
        epochs, force = run.epochs, run.force_promote
        builtin_version, builtin_raw = registry.shipped()
        registry.ensure_builtin(session, store, builtin_version, builtin_raw)
        parent = registry.active(session)
        parent_version, parent_key = parent.version, parent.object_key
    parent_raw = store.get(parent_key)

    labelled = user_labels(store)
    user_train = [item for item, _ in labelled if not is_held_out(item.name)]
    user_eval = [item for item, _ in labelled if is_held_out(item.name)]
    base_train, validation = base_sets(settings)
    if not base_train and not user_train:
        raise ValueError("nothing to train on: no base data on this machine and no user labels")

    manifest = {"parent": parent_version, "base": sorted(i.name for i in base_train),
                "user": sorted((item.name, sha) for item, sha in labelled if not is_held_out(item.name)),
                "epochs": epochs, "steps_per_epoch": settings.training_steps_per_epoch}
    manifest_sha = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()

    kept = fine_tuning_config(parent_raw)
    samples = prepare(base_train, diameter=kept["diameter"])
    if user_train:
        share = settings.training_user_share if base_train else 1.0
        # weight so that user labels make up `share` of what is sampled, whatever their number
        weight = (share / (1 - share)) * len(base_train) / len(user_train) if base_train and share < 1 else 1.0
        samples += prepare(user_train, weight=weight, diameter=kept["diameter"])
    steps = max(1, epochs * settings.training_steps_per_epoch)
    cfg = TrainConfig(steps=steps, batch=settings.training_batch, crop=settings.training_crop, lr=settings.training_lr,
                      restarts=(), eval_every=10 * steps + 1, checkpoint_every=10 * steps + 1, device=settings.device,
                      name="nucleus-ft", seed=zlib.crc32(run_id.encode()) % 10_000, **kept)

    def progress(step: int, total: int, info: dict) -> None:
        if step % max(1, total // 20) == 0 or step == total:
            _set(run_id, progress=round(0.8 * step / total, 3))

    labelled_train = base_train + user_train
    size_items = random.Random(0).sample(labelled_train, min(SIZE_FIT_IMAGES, len(labelled_train)))
    with tempfile.TemporaryDirectory(prefix="nucleus-train-") as tmp:
        out = Path(tmp)
        train(samples, [], out, cfg, init_weights=parent_raw, progress=progress)
        size_model = export_weights(out / "model.pt", out / "export.pt", size_items=size_items)
        new_raw = (out / "export.pt").read_bytes()
    version = weights_version(new_raw)

    _set(run_id, progress=0.85)
    metrics = {"validation": _score(new_raw, validation), "user_held_out": _score(new_raw, user_eval)}
    parent_metrics = {"validation": _score(parent_raw, validation), "user_held_out": _score(parent_raw, user_eval)}
    regressions = {
        name: round(parent_metrics[name]["dsb_score"] - metrics[name]["dsb_score"], 4)
        for name in ("validation", "user_held_out")
        if metrics[name] and parent_metrics[name]
    }
    passes_gate = all(drop <= settings.promotion_tolerance for drop in regressions.values())
    promote = force or passes_gate
    summary = {"base_images": len(base_train), "user_images": len(user_train), "user_held_out": len(user_eval),
               "size_model_images": len(size_items) if size_model else 0,
               "validation_images": len(validation), "steps": steps, "epochs": epochs}
    record = {**metrics, "parent": parent_metrics, "regression": regressions, "gate_passed": passes_gate,
              "tolerance": settings.promotion_tolerance}

    with write_scope() as session:
        registry.publish(session, store, version, new_raw, parent=parent_version, metrics=record,
                         training_summary=summary, manifest_sha256=manifest_sha)
        if promote:
            registry.activate(session, version)
        run = session.get(TrainingRun, run_id)
        run.status, run.finished, run.progress = JobStatus.done, _now(), 1.0
        run.version, run.promoted, run.metrics = version, promote, record
    log.info("training run finished", extra={"run_id": run_id, "version": version, "promoted": promote,
                                             "regression": regressions})


def fail(run_id: str, reason: str) -> None:
    _set(run_id, status=JobStatus.failed, error=reason[:2000], finished=_now())
