"""Tokens: created by the CLI (the bare token is the last line), stored only hashed, listed, revoked."""
from __future__ import annotations

import hashlib
import sqlite3

import pytest

from testkit.stack import nucleus_command


def token_rows(data_dir) -> list[tuple]:
    with sqlite3.connect(data_dir / "nucleus.db") as db:
        return db.execute("SELECT id, name, role, project_id, token_hash, revoked FROM tokens ORDER BY id").fetchall()


def test_create_prints_the_bare_token_last_and_stores_only_its_hash(tmp_path):
    result = nucleus_command("token", "create", "--name", "scope-1", "--role", "uploader", "--project", "lab-a",
                             "--data-dir", str(tmp_path), data_dir=tmp_path)
    token = result.stdout.strip().splitlines()[-1]
    assert token and " " not in token and len(token) >= 32
    [(_, name, role, project_id, token_hash, revoked)] = token_rows(tmp_path)
    assert (name, role, revoked) == ("scope-1", "uploader", None) and project_id is not None
    assert token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (tmp_path / "nucleus.db").read_bytes().decode("latin-1")


def test_list_and_revoke(tmp_path):
    first = nucleus_command("token", "create", "--name", "viewer-1", "--role", "viewer", "--data-dir", str(tmp_path),
                            data_dir=tmp_path).stdout.strip().splitlines()[-1]
    nucleus_command("token", "create", "--name", "admin-1", "--role", "admin", "--data-dir", str(tmp_path),
                    data_dir=tmp_path)
    listing = nucleus_command("token", "list", "--data-dir", str(tmp_path), data_dir=tmp_path).stdout
    assert "viewer-1" in listing and "admin-1" in listing and first not in listing
    token_id = token_rows(tmp_path)[0][0]
    nucleus_command("token", "revoke", str(token_id), "--data-dir", str(tmp_path), data_dir=tmp_path)
    assert token_rows(tmp_path)[0][5] is not None and token_rows(tmp_path)[1][5] is None
    missing = nucleus_command("token", "revoke", "9999", "--data-dir", str(tmp_path), data_dir=tmp_path, check=False)
    assert missing.returncode != 0 and "no token" in missing.stderr


def test_unknown_role_is_refused(tmp_path):
    result = nucleus_command("token", "create", "--name", "x", "--role", "root", "--data-dir", str(tmp_path),
                             data_dir=tmp_path, check=False)
    assert result.returncode != 0 and "root" in result.stderr


def test_verify_token_rules(use_settings, tmp_path):
    from shared.infra.auth import create_token, list_tokens, revoke_token, verify_token
    from shared.infra.db.migrate import upgrade
    from shared.infra.db.session import session_scope

    use_settings(tmp_path)
    upgrade()
    with session_scope() as session:
        raw = create_token(session, "instrument", "uploader", project_name="screening")
    with session_scope() as session:
        token = verify_token(session, raw)
        assert token is not None and token.role == "uploader" and token.project.name == "screening"
        assert verify_token(session, raw + "x") is None and verify_token(session, "") is None
        assert revoke_token(session, token.id) and not revoke_token(session, 12345)
    with session_scope() as session:
        assert verify_token(session, raw) is None
        assert [t.name for t in list_tokens(session)] == ["instrument"]
    with pytest.raises(ValueError):
        with session_scope() as session:
            create_token(session, "bad", "superuser")
