"""`nucleus token create|list|revoke`: API tokens, stored hashed. Safe while `nucleus up` runs."""
from __future__ import annotations

import json

import click

from nucleus.commands.db import apply_data_dir, data_dir_option

ROLE_CHOICES = ("viewer", "uploader", "admin")  # shared.infra.auth.ROLES, without importing the database layer here


def _prepare(data_dir: str | None) -> None:
    from shared.infra.db.migrate import upgrade

    apply_data_dir(data_dir)
    upgrade()  # a fresh data directory gets its schema; an up-to-date one is left alone


@click.group()
def token():
    """API tokens."""


@token.command()
@click.option("--name", required=True, help="Who or what uses it (a person, an instrument).")
@click.option("--role", type=click.Choice(ROLE_CHOICES), required=True)
@click.option("--project", default=None, help="Limit it to one project (created if needed); default: every project.")
@data_dir_option
def create(name, role, project, data_dir):
    """Create a token and print it (the last line of output). It is shown only this once."""
    from shared.infra.auth import create_token
    from shared.infra.db.session import write_scope

    _prepare(data_dir)
    with write_scope() as session:
        raw = create_token(session, name=name, role=role, project_name=project)
    click.echo(f"token for {name!r} ({role}{', project ' + project if project else ''}); it is shown only once:",
               err=True)
    click.echo(raw)


@token.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per token.")
@data_dir_option
def list_(as_json, data_dir):
    """List tokens (never the tokens themselves)."""
    from shared.infra.auth import list_tokens
    from shared.infra.db.session import session_scope

    _prepare(data_dir)
    with session_scope() as session:
        rows = [{"id": t.id, "name": t.name, "role": t.role, "project": t.project.name if t.project else None,
                 "created": t.created.isoformat() if t.created else None,
                 "revoked": t.revoked.isoformat() if t.revoked else None} for t in list_tokens(session)]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo(f"{'ID':>4}  {'NAME':<24} {'ROLE':<9} {'PROJECT':<16} {'CREATED':<20} REVOKED")
    for r in rows:
        click.echo(f"{r['id']:>4}  {r['name']:<24} {r['role']:<9} {r['project'] or '*':<16} "
                   f"{(r['created'] or '')[:19]:<20} {(r['revoked'] or '')[:19]}")


@token.command()
@click.argument("token_id", type=int)
@data_dir_option
def revoke(token_id, data_dir):
    """Revoke a token by its id (from `nucleus token list`)."""
    from shared.infra.auth import revoke_token
    from shared.infra.db.session import write_scope

    _prepare(data_dir)
    with write_scope() as session:
        found = revoke_token(session, token_id)
    if not found:
        raise click.ClickException(f"no token with id {token_id}")
    click.echo(f"token {token_id} revoked")
