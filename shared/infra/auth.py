"""API tokens and roles. Only a token's SHA-256 is stored; the token itself is shown once."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.infra.db.tables import Project, Token, utcnow

ROLES = ("viewer", "uploader", "admin")
DEFAULT_PROJECT = "default"
TOKEN_PREFIX = "nuc_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def ensure_default_project(session: Session) -> Project:
    return get_or_create_project(session, DEFAULT_PROJECT)


def create_token(session: Session, name: str, role: str, project_name: str | None = None) -> str:
    """Store a new token (hashed) and return the raw token. No project: it reaches every project."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    project = get_or_create_project(session, project_name) if project_name else None
    session.add(Token(name=name, role=role, project_id=project.id if project else None, token_hash=hash_token(raw)))
    session.flush()
    return raw


def verify_token(session: Session, raw: str | None) -> Token | None:
    """The live token for `raw`, or None when it is missing, unknown or revoked."""
    if not raw:
        return None
    token = session.scalar(select(Token).where(Token.token_hash == hash_token(raw)))
    if token is None or token.revoked is not None:
        return None
    return token


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.id)))


def revoke_token(session: Session, token_id: int) -> bool:
    """Revoke a token; False when no such token. Revoking twice keeps the first date."""
    token = session.get(Token, token_id)
    if token is None:
        return False
    if token.revoked is None:
        token.revoked = utcnow()
    return True
