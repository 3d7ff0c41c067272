"""Alembic migrations bring an empty SQLite or PostgreSQL database to a schema that matches the models,
from any working directory (the scripts ship inside the package)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from testkit import servers
from testkit.env import service_env

NUCLEUS = Path(sys.executable).parent / "nucleus"


def schema_differences(url: str) -> list:
    from shared.infra.db.tables import Base
    from shared.infra.db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()


@pytest.fixture
def empty_postgres(pg_url):
    # a database of its own: the session's pg_url may already hold other tests' schema
    url = servers.create_database(servers.MACHINE_PG, prefix="nucleus_migrate")
    yield url
    servers.drop_database(url)


def test_upgrade_empty_sqlite_matches_models(tmp_path):
    from shared.infra.db.migrate import current_revision, head_revision, upgrade

    url = f"sqlite:///{tmp_path / 'new' / 'nucleus.db'}"  # the folder does not exist yet
    upgrade(url)
    upgrade(url)  # a second run is a no-op
    assert current_revision(url) == head_revision() is not None
    assert schema_differences(url) == []


def test_upgrade_empty_postgres_matches_models(empty_postgres):
    from shared.infra.db.migrate import current_revision, head_revision, upgrade

    upgrade(empty_postgres)
    assert current_revision(empty_postgres) == head_revision()
    assert schema_differences(empty_postgres) == []


def test_db_upgrade_command_from_any_directory(tmp_path):
    data_dir = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([str(NUCLEUS), "db", "upgrade", "--data-dir", str(data_dir)], cwd=elsewhere,
                            env=service_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (data_dir / "nucleus.db").is_file()
    assert schema_differences(f"sqlite:///{data_dir / 'nucleus.db'}") == []
    url = f"sqlite:///{tmp_path / 'by-url.db'}"
    result = subprocess.run([str(NUCLEUS), "db", "upgrade", "--database-url", url], cwd=elsewhere,
                            env=service_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert schema_differences(url) == []
