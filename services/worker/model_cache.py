"""The worker's models: a few loaded at once, chosen per job.

Before each task the worker asks the registry which version the job wants (the version a
re-segmentation asked for, else the job's project's active version; shared.infra.registry) and loads
those weights from the object store unless they are among the few already in memory
(settings.model_cache_size, the least recently used dropped first). With no version
registered it uses the shipped weights (or settings.weights_path). A task keeps the Segmenter it was
handed, so an activation never changes the model under a running task, and takes effect on the next
job without a restart.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from functools import lru_cache

from shared.infra import registry
from shared.infra.settings import Settings, get_settings
from shared.infra.db.session import session_scope
from shared.infra.storage import ObjectNotFound, get_store

log = logging.getLogger(__name__)

SHIPPED = "<shipped>"


class VersionUnavailable(Exception):
    """A version a job asked for by name whose weights are missing."""


def torch_threads(settings: Settings) -> int:
    """Threads per worker process: the setting, or the cores shared fairly among the worker processes."""
    if settings.torch_threads > 0:
        return settings.torch_threads
    return max(1, (os.cpu_count() or 1) // max(1, settings.worker_processes))


class ModelCache:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.capacity = settings.model_cache_size
        self.loaded: OrderedDict[str, object] = OrderedDict()  # version (or SHIPPED) -> Segmenter, oldest first
        self._lock = threading.Lock()

    def wanted(self, job_id: str | None) -> tuple[str, str | None, bool]:
        """(version, object_key, asked_for_by_name) for the job; (SHIPPED, None, False) when no version is
        registered. Without a job: the `default` project's active version."""
        with session_scope() as session:
            row, named = (registry.version_for_job(session, job_id) if job_id
                          else (registry.active_version(session), None))
            if row is None and named:
                raise VersionUnavailable(f"no model version {named!r}")
            return (row.version, row.object_key, bool(named)) if row else (SHIPPED, None, False)

    def current(self, job_id: str | None = None):
        """The Segmenter for the job's version, loading it if it is not in memory."""
        key, object_key, named = self.wanted(job_id)
        with self._lock:
            if key in self.loaded:
                self.loaded.move_to_end(key)
                return self.loaded[key]
            return self._load(key, object_key, named)

    def _load(self, key: str, object_key: str | None, named: bool):
        import torch

        from shared.domain.model.segmenter import Segmenter

        torch.set_num_threads(torch_threads(self.settings))
        if object_key is None:
            weights = self.settings.weights_path  # None: the weights shipped inside the package
        else:
            try:
                weights = get_store().get(object_key)
            except ObjectNotFound:
                if named:
                    raise VersionUnavailable(f"the weights of model version {key} are missing from the object store")
                log.error("active model's weights are missing; using the shipped weights",
                          extra={"model_version": key, "object_key": object_key})
                if SHIPPED in self.loaded:
                    return self.loaded[SHIPPED]
                weights, key = self.settings.weights_path, SHIPPED
        segmenter = Segmenter.from_settings(weights, self.settings)
        self.loaded[key] = segmenter
        while len(self.loaded) > self.capacity:
            self.loaded.popitem(last=False)
        log.info("model loaded", extra={"model_version": segmenter.version, "device": str(segmenter.device),
                                        "precision": str(segmenter.amp_dtype or torch.float32),
                                        "runtime": segmenter.runtime, "torch_threads": torch.get_num_threads()})
        return segmenter


@lru_cache(maxsize=1)
def model_cache() -> ModelCache:
    return ModelCache(get_settings())
