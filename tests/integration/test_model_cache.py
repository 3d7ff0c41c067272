"""A worker process keeps NUCLEUS_MODEL_CACHE_SIZE model versions loaded, dropping the least recently
used; a version still held is handed out again without loading."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.worker.model_cache import ModelCache
from shared.infra import registry
from shared.infra.settings import Settings, get_settings
from shared.infra.db.migrate import upgrade
from shared.infra.db.session import write_scope
from shared.infra.storage import get_store


def _two_versions() -> tuple[str, str]:
    """The shipped weights registered as the `default` project's version, and again under a second name."""
    version, raw = registry.shipped()
    with write_scope() as session:
        registry.ensure_builtin(session, get_store(), version, raw)
        registry.publish(session, get_store(), "copy-2", raw, parent=version, metrics={}, training_summary={},
                         manifest_sha256="0" * 64)
    return version, "copy-2"


def _activate(version: str) -> None:
    with write_scope() as session:
        registry.activate(session, version)


def test_the_cache_holds_as_many_versions_as_the_setting(use_settings, tmp_path):
    use_settings(tmp_path, model_cache_size=1)
    upgrade()
    first, second = _two_versions()

    one = ModelCache(get_settings())
    held = one.current()
    assert list(one.loaded) == [first]
    _activate(second)
    assert one.current() is not held and list(one.loaded) == [second]  # the older one was dropped

    two = ModelCache(get_settings().model_copy(update={"model_cache_size": 2}))
    loaded_second = two.current()
    _activate(first)
    loaded_first = two.current()
    assert list(two.loaded) == [second, first]
    _activate(second)
    assert two.current() is loaded_second and loaded_first is not loaded_second  # still held: not loaded again


def test_a_cache_of_no_models_is_refused():
    with pytest.raises(ValidationError):
        Settings(model_cache_size=0)
