"""Server-side web sessions: a signed-in browser's cookie names a row here, so signing out revokes it
for every copy of the cookie.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'web_sessions',
        sa.Column('id_hash', sa.String(length=64), nullable=False),
        sa.Column('token_id', sa.Integer(), nullable=False),
        sa.Column('created', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['token_id'], ['tokens.id'], name='fk_web_sessions_token_id_tokens'),
        sa.PrimaryKeyConstraint('id_hash', name='pk_web_sessions'),
    )
    op.create_index('ix_web_sessions_token_id', 'web_sessions', ['token_id'])


def downgrade() -> None:
    op.drop_index('ix_web_sessions_token_id', table_name='web_sessions')
    op.drop_table('web_sessions')
