"""The process-wide model: loaded once, swapped only when the active model version changes.

Before each task the worker asks the database which ModelVersion is active (one indexed query);
when that differs from the loaded one it fetches those weights from the object store once. With
no active row it uses the shipped weights (or settings.weights_path). A task keeps the Segmenter
it was handed, so a switch never changes the model under a running task.
"""
from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache

from sqlalchemy import select

from shared.config import Settings, get_settings
from shared.db.models import ModelVersion
from shared.db.session import session_scope
from shared.storage import ObjectNotFound, get_store

log = logging.getLogger(__name__)

SHIPPED = "<shipped>"


def torch_threads(settings: Settings) -> int:
    """Threads per worker process: the setting, or the cores shared fairly among the worker processes."""
    if settings.torch_threads > 0:
        return settings.torch_threads
    return max(1, (os.cpu_count() or 1) // max(1, settings.worker_processes))


class ModelCache:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.loaded_key: str | None = None
        self.segmenter = None
        self._lock = threading.Lock()

    def active(self) -> tuple[str, str] | None:
        """(version, object_key) of the active model version, or None to use the shipped weights."""
        with session_scope() as session:
            row = session.execute(select(ModelVersion.version, ModelVersion.object_key)
                                  .where(ModelVersion.active.is_(True))
                                  .order_by(ModelVersion.created.desc()).limit(1)).first()
        return (row.version, row.object_key) if row else None

    def current(self):
        """The Segmenter for the active version, loading it if it is not the one in memory."""
        active = self.active()
        key = active[0] if active else SHIPPED
        with self._lock:
            if self.segmenter is None or key != self.loaded_key:
                self._load(key, active[1] if active else None)
            return self.segmenter

    def _load(self, key: str, object_key: str | None) -> None:
        import torch

        from shared.model.segmenter import Segmenter

        torch.set_num_threads(torch_threads(self.settings))
        if object_key is None:
            weights = self.settings.weights_path  # None: the weights shipped inside the package
        else:
            try:
                weights = get_store().get(object_key)
            except ObjectNotFound:
                if self.segmenter is not None:
                    log.error("active model's weights are missing; keeping the loaded model",
                              extra={"model_version": key, "object_key": object_key, "kept": self.loaded_key})
                    return
                log.error("active model's weights are missing; using the shipped weights",
                          extra={"model_version": key, "object_key": object_key})
                weights, key = self.settings.weights_path, SHIPPED
        self.segmenter = Segmenter.from_settings(weights, self.settings)
        self.loaded_key = key
        log.info("model loaded", extra={"model_version": self.segmenter.version, "device": str(self.segmenter.device),
                                        "precision": str(self.segmenter.amp_dtype or torch.float32),
                                        "runtime": self.segmenter.runtime, "torch_threads": torch.get_num_threads()})


@lru_cache(maxsize=1)
def model_cache() -> ModelCache:
    return ModelCache(get_settings())
