"""Channels and physical units of images and nuclei . Images record their channel names; nuclei carry extra named
measures (per-channel intensities, physical units) and results list those columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images') as batch:
        batch.add_column(sa.Column('channel_names', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('results') as batch:
        batch.add_column(sa.Column('measure_columns', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('nuclei') as batch:
        batch.add_column(sa.Column('measures', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('nuclei') as batch:
        batch.drop_column('measures')
    with op.batch_alter_table('results') as batch:
        batch.drop_column('measure_columns')
    with op.batch_alter_table('images') as batch:
        batch.drop_column('channel_names')
