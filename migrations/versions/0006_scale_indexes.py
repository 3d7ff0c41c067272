"""Indexes for large experiments:
- an experiment's images in history order (alone, and after its condition or well filter), so a page, a
  filter or a deep page walks an index instead of sorting the experiment;
- an image's jobs by (created, id) (replacing the index on image_id alone), so "the image's newest job" is
  one index probe;
- results by image carrying their measure-column lists (PostgreSQL INCLUDE; replacing the index on image_id
  alone), so an experiment's measure columns are read from the index;
- a result's nuclei in label order (replacing the index on result_id alone), so an export streams nuclei
  image by image without sorting millions of rows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

IMAGE_INDEXES = {
    'ix_images_experiment_created': ['experiment_id', 'created', 'id'],
    'ix_images_experiment_condition': ['experiment_id', 'condition', 'created', 'id'],
    'ix_images_experiment_well': ['experiment_id', 'well', 'created', 'id'],
}


def upgrade() -> None:
    for name, columns in IMAGE_INDEXES.items():
        op.create_index(name, 'images', columns)
    op.create_index('ix_jobs_image_created', 'jobs', ['image_id', 'created', 'id'])
    op.drop_index('ix_jobs_image_id', table_name='jobs')
    op.create_index('ix_results_image_measures', 'results', ['image_id'], postgresql_include=['measure_columns'])
    op.drop_index('ix_results_image_id', table_name='results')
    op.create_index('ix_nuclei_result_label', 'nuclei', ['result_id', 'label'])
    op.drop_index('ix_nuclei_result_id', table_name='nuclei')


def downgrade() -> None:
    op.create_index('ix_nuclei_result_id', 'nuclei', ['result_id'])
    op.drop_index('ix_nuclei_result_label', table_name='nuclei')
    op.create_index('ix_jobs_image_id', 'jobs', ['image_id'])
    op.create_index('ix_results_image_id', 'results', ['image_id'])
    op.drop_index('ix_results_image_measures', table_name='results')
    op.drop_index('ix_jobs_image_created', table_name='jobs')
    for name in IMAGE_INDEXES:
        op.drop_index(name, table_name='images')
