"""Jobs by status with their images (replacing the index on status alone), carrying (created, id): a status
filter on the history (?status=failed) starts from the few jobs with that status, read from the index alone,
and meets the experiment's images through them, instead of walking the experiment's images and probing
each one's job.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_status_image', 'jobs', ['status', 'image_id'], postgresql_include=['created', 'id'])
    op.drop_index('ix_jobs_status', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_status', 'jobs', ['status'])
    op.drop_index('ix_jobs_status_image', table_name='jobs')
