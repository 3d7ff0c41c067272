"""Schema migrations (Alembic), run programmatically with the scripts shipped in the package."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.infra.private import private_file


def migrations_folder() -> Path:
    import migrations

    return Path(migrations.__file__).resolve().parent


def alembic_config(database_url: str | None = None) -> Config:
    from shared.infra.settings import get_settings

    url = database_url or get_settings().resolved_database_url
    config = Config()
    config.set_main_option("script_location", str(migrations_folder()))
    # passed as an attribute, not an option: ConfigParser would choke on '%' in a password
    config.attributes["database_url"] = url
    return config


def _ensure_sqlite_folder(url: str) -> None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix):] not in ("", ":memory:"):
        private_file(url[len(prefix):])  # a new database is the service user's alone (shared.infra.private)


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    """Create or migrate the database to `revision` (default: the newest)."""
    config = alembic_config(database_url)
    _ensure_sqlite_folder(config.attributes["database_url"])
    command.upgrade(config, revision)


def current_revision(database_url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from shared.infra.db.session import make_engine

    config = alembic_config(database_url)
    engine = make_engine(config.attributes["database_url"])
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
