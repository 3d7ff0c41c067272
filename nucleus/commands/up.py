"""`nucleus up`: the whole product on one machine, in the foreground.

Migrates the database, prints the URL (and the first admin token on a new data directory), then
supervises: the API under gunicorn, N segmentation workers, the trainer and the sweeper. The
embedded default needs no servers: SQLite, a local object folder and a file-system broker, all
under the data directory.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import click

API_THREADS = 8
# Celery warns in several free-text lines, before its logging is set up, that it runs as root; `up` says it once.
ROOT_WARNING = "ignore:You're running the worker with superuser privileges"

log = logging.getLogger("nucleus.up")


def child_commands(port: int, host: str, workers: int) -> dict[str, list[str]]:
    py = sys.executable
    # gunicorn's own start-up lines only from warnings up (the API logs its own); Celery's banner: see
    # child_environment
    celery_worker = [py, "-m", "celery"]
    quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
    commands = {
        "api": [py, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", "1", "--threads", str(API_THREADS),
                "--worker-class", "gthread", "--timeout", "300", "--graceful-timeout", "5",
                "--no-control-socket", "--name", "nucleus-api", "--log-level", "warning", "services.api.wsgi:app"],
        "trainer": [*celery_worker, "-A", "services.trainer.app", "worker", "-Q", "train", "--pool", "solo",
                    "--concurrency", "1", "-n", "trainer@%h", *quiet],
        "sweeper": [py, "-m", "services.sweeper"],
    }
    for i in range(1, workers + 1):
        commands[f"worker-{i}"] = [*celery_worker, "-A", "services.worker.app", "worker", "-Q", "segment",
                                   "--pool", "solo", "--concurrency", "1", "-n", f"segment-{i}@%h", *quiet]
    return commands


def child_environment() -> dict[str, str]:
    """The children's environment: Celery without its start-up banner (CELERY_QUIET is its --quiet, which
    would also change the command line that names a process a worker) nor its root warning."""
    warnings = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), ROOT_WARNING]))
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": warnings, "CELERY_QUIET": "1"}


def wants_json(log_format: str | None) -> bool:
    """JSON lines when asked, or when nobody is watching: stdout is not a terminal (a file, a pipe, a service
    manager) and NUCLEUS_LOG_JSON does not say otherwise."""
    if log_format is not None:
        return log_format == "json"
    if sys.stdout.isatty():
        return False
    return os.environ.get("NUCLEUS_LOG_JSON", "1").strip().lower() not in ("0", "false", "no", "off")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def first_admin_token() -> str | None:
    """An admin token when the instance has none yet (a new data directory); else None."""
    from sqlalchemy import func, select

    from shared.infra.auth import create_token, ensure_default_project
    from shared.infra.db.tables import Token
    from shared.infra.db.session import write_scope

    with write_scope() as session:
        ensure_default_project(session)
        if session.scalar(select(func.count()).select_from(Token)):
            return None
        return create_token(session, name="first-admin", role="admin")


@click.command()
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Where everything is kept (default: $NUCLEUS_DATA_DIR or ./nucleus-data).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Segmentation worker processes (default: $NUCLEUS_WORKER_PROCESSES or 1).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API listens on.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines of every process: readable text or JSON (default: text on a terminal, else "
                   "$NUCLEUS_LOG_JSON or JSON).")
def up(port, data_dir, workers, host, log_format):
    """Run API, workers, trainer and sweeper in the foreground until Ctrl-C."""
    from shared.infra.settings import reload_settings
    from shared.infra.db.migrate import current_revision, upgrade
    from shared.infra.logs import configure_logging

    from nucleus.supervisor import Supervisor

    from shared.infra.private import DIR_MODE, private_dir, use_private_umask

    use_private_umask()  # everything this process and its children create is the service user's alone
    data_dir = Path(data_dir or os.environ.get("NUCLEUS_DATA_DIR") or "./nucleus-data").expanduser().resolve()
    private_dir(data_dir).chmod(DIR_MODE)
    os.environ["NUCLEUS_DATA_DIR"] = str(data_dir)
    if workers is not None:
        os.environ["NUCLEUS_WORKER_PROCESSES"] = str(workers)
    os.environ["NUCLEUS_LOG_JSON"] = "1" if wants_json(log_format) else "0"  # for every child too
    settings = reload_settings()
    configure_logging("up")
    if not settings.log_json:  # a person is reading: one line for the schema instead of each migration's story
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    if not _port_free(host, port):
        raise click.ClickException(f"port {port} on {host} is already in use; pick another with --port")

    supervisor = Supervisor(env=child_environment(), cwd=str(data_dir))
    supervisor.handle_signals()  # a stop request during start-up is honoured, not fatal
    for name, argv in child_commands(port, host, settings.worker_processes).items():
        supervisor.add(name, argv)

    before = current_revision()
    upgrade()
    after = current_revision()
    log.info("database schema at %s%s", after, f" (was {before or 'empty'})" if before != after else "")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.warning("running as root: every process of the service has superuser privileges")
    token = first_admin_token()
    if settings.s3_endpoint:
        from shared.infra.storage import get_store

        get_store().ensure_bucket()

    click.echo(f"nucleus is starting at http://{host}:{port}")
    click.echo(f"data directory: {data_dir}")
    if token:
        click.echo("first admin token (shown only this once; `nucleus token create` makes more):")
        click.echo(token)
    sys.stdout.flush()
    supervisor.run()
