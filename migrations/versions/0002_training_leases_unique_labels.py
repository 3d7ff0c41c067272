"""Training runs get a lease (the sweeper re-sends a queued run whose message was lost); one label row
per (image, label bytes) even under concurrent uploads; jobs count the times their worker died on them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('interruptions', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('training_runs') as batch:
        batch.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('labels') as batch:
        batch.create_unique_constraint('uq_label_image_sha256', ['image_id', 'sha256'])


def downgrade() -> None:
    with op.batch_alter_table('labels') as batch:
        batch.drop_constraint('uq_label_image_sha256', type_='unique')
    with op.batch_alter_table('training_runs') as batch:
        batch.drop_column('lease_until')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('interruptions')
