"""Settings for the code under test: an environment for a subprocess (`service_env`), or the
current process re-configured in place (`apply_settings`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def _setting_names() -> set[str]:
    from shared.infra.settings import Settings

    return {f"NUCLEUS_{name.upper()}" for name in Settings.model_fields}


def _env_name(key: str) -> str:
    return key if key.startswith("NUCLEUS_") else f"NUCLEUS_{key.upper()}"


def settings_env(data_dir: str | os.PathLike | None = None, **overrides) -> dict[str, str]:
    """Only the NUCLEUS_* settings: data_dir plus overrides, given as setting names
    (`database_url=...`) or variable names (`NUCLEUS_DATABASE_URL=...`); None leaves one unset."""
    env: dict[str, str] = {}
    if data_dir is not None:
        env["NUCLEUS_DATA_DIR"] = str(Path(data_dir).resolve())
    for key, value in overrides.items():
        name = _env_name(key)
        if name not in _setting_names():
            raise KeyError(f"{name} is not a field of shared.infra.settings.Settings")
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def service_env(data_dir: str | os.PathLike | None = None, **overrides) -> dict[str, str]:
    """A full environment for a subprocess (nucleus, celery, gunicorn): this process's environment
    without any inherited NUCLEUS_* setting, plus `settings_env(data_dir, **overrides)`, with the
    virtualenv's bin folder first on PATH."""
    names = _setting_names()
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(settings_env(data_dir, **overrides))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def clear_shared_caches() -> None:
    """Forget every module-level cached object in shared/ (settings, engines, stores...), so the
    next call builds it from the current environment."""
    for name, module in list(sys.modules.items()):
        if name != "shared" and not name.startswith("shared."):
            continue
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == name:
                value.cache_clear()


def apply_settings(monkeypatch, data_dir=None, **overrides):
    """Point this process's settings at `data_dir`/overrides for one test; monkeypatch undoes the
    environment, and the caches are cleared again by the fixture that calls this."""
    for name in _setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in settings_env(data_dir, **overrides).items():
        monkeypatch.setenv(name, value)
    clear_shared_caches()
    from shared.infra.settings import get_settings

    return get_settings()
