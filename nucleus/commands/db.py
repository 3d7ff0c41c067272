"""`nucleus db upgrade|current`: the schema, migrated by Alembic with the scripts inside the package."""
from __future__ import annotations

import os
from pathlib import Path

import click


def apply_data_dir(data_dir: str | None) -> None:
    """Make this process use DIR the way `nucleus up --data-dir DIR` does (absolute NUCLEUS_DATA_DIR)."""
    if data_dir:
        os.environ["NUCLEUS_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
        from shared.infra.settings import reload_settings

        reload_settings()


data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False),
                               help="The data directory `nucleus up` uses (default: $NUCLEUS_DATA_DIR or ./nucleus-data).")


@click.group()
def db():
    """The database schema."""


@db.command()
@click.option("--database-url", default=None, help="SQLAlchemy URL (default: from settings).")
@data_dir_option
def upgrade(database_url, data_dir):
    """Create or migrate the database to the newest schema."""
    from shared.infra.db.migrate import current_revision, upgrade as run_upgrade

    apply_data_dir(data_dir)
    run_upgrade(database_url)
    click.echo(f"database at revision {current_revision(database_url)}")


@db.command()
@click.option("--database-url", default=None)
@data_dir_option
def current(database_url, data_dir):
    """Print the database's schema revision and the newest one shipped."""
    from shared.infra.db.migrate import current_revision, head_revision

    apply_data_dir(data_dir)
    click.echo(f"current: {current_revision(database_url) or '(empty)'}  head: {head_revision()}")
