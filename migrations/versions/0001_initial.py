"""The initial schema: every table of shared/infra/db/tables.py as of issue 2.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_versions',
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('parent', sa.String(length=100), nullable=True),
    sa.Column('object_key', sa.String(length=300), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=True),
    sa.Column('training_summary', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_index('ix_model_versions_active', 'model_versions', ['active'])

    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('training_runs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'done', 'failed', name='jobstatus', native_enum=False, length=16), nullable=False),
    sa.Column('epochs', sa.Integer(), nullable=False),
    sa.Column('force_promote', sa.Boolean(), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=True),
    sa.Column('promoted', sa.Boolean(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('experiments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_index('ix_experiments_project_id', 'experiments', ['project_id'])

    op.create_table('tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('images',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('object_key', sa.String(length=300), nullable=False),
    sa.Column('filename', sa.String(length=500), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('condition', sa.String(length=200), nullable=True),
    sa.Column('well', sa.String(length=20), nullable=True),
    sa.Column('plate', sa.String(length=200), nullable=True),
    sa.Column('site', sa.String(length=20), nullable=True),
    sa.Column('channel', sa.Integer(), nullable=True),
    sa.Column('pixel_size_um', sa.Float(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('experiment_id', 'sha256', name='uq_image_experiment_sha256')
    )
    op.create_index('ix_images_condition', 'images', ['condition'])
    op.create_index('ix_images_created', 'images', ['created'])
    op.create_index('ix_images_experiment_id', 'images', ['experiment_id'])
    op.create_index('ix_images_sha256', 'images', ['sha256'])
    op.create_index('ix_images_well', 'images', ['well'])

    op.create_table('jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('image_id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'done', 'failed', name='jobstatus', native_enum=False, length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('enqueued', sa.Integer(), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('image_id')
    )
    op.create_index('ix_jobs_lease_until', 'jobs', ['lease_until'])
    op.create_index('ix_jobs_status', 'jobs', ['status'])

    op.create_table('labels',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('image_id', sa.String(length=32), nullable=False),
    sa.Column('object_key', sa.String(length=300), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_labels_image_id', 'labels', ['image_id'])

    op.create_table('results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('image_id', sa.String(length=32), nullable=False),
    sa.Column('model_version', sa.String(length=100), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('area_mean', sa.Float(), nullable=True),
    sa.Column('area_median', sa.Float(), nullable=True),
    sa.Column('area_min', sa.Float(), nullable=True),
    sa.Column('area_max', sa.Float(), nullable=True),
    sa.Column('labels_key', sa.String(length=300), nullable=False),
    sa.Column('overlay_key', sa.String(length=300), nullable=False),
    sa.Column('nuclei_csv_key', sa.String(length=300), nullable=False),
    sa.Column('seconds_model', sa.Float(), nullable=True),
    sa.Column('seconds_total', sa.Float(), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('image_id'),
    sa.UniqueConstraint('job_id')
    )
    op.create_index('ix_results_model_version', 'results', ['model_version'])

    op.create_table('nuclei',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.Integer(), nullable=False),
    sa.Column('area', sa.Float(), nullable=False),
    sa.Column('perimeter', sa.Float(), nullable=False),
    sa.Column('centroid_x', sa.Float(), nullable=False),
    sa.Column('centroid_y', sa.Float(), nullable=False),
    sa.Column('equivalent_diameter', sa.Float(), nullable=False),
    sa.Column('eccentricity', sa.Float(), nullable=False),
    sa.Column('solidity', sa.Float(), nullable=False),
    sa.Column('mean_intensity', sa.Float(), nullable=False),
    sa.Column('integrated_intensity', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['result_id'], ['results.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_nuclei_result_id', 'nuclei', ['result_id'])



def downgrade() -> None:
    op.drop_index('ix_nuclei_result_id', table_name='nuclei')

    op.drop_table('nuclei')
    op.drop_index('ix_results_model_version', table_name='results')

    op.drop_table('results')
    op.drop_index('ix_labels_image_id', table_name='labels')

    op.drop_table('labels')
    op.drop_index('ix_jobs_status', table_name='jobs')
    op.drop_index('ix_jobs_lease_until', table_name='jobs')

    op.drop_table('jobs')
    op.drop_index('ix_images_well', table_name='images')
    op.drop_index('ix_images_sha256', table_name='images')
    op.drop_index('ix_images_experiment_id', table_name='images')
    op.drop_index('ix_images_created', table_name='images')
    op.drop_index('ix_images_condition', table_name='images')

    op.drop_table('images')
    op.drop_table('tokens')
    op.drop_index('ix_experiments_project_id', table_name='experiments')

    op.drop_table('experiments')
    op.drop_table('training_runs')
    op.drop_table('projects')
    op.drop_index('ix_model_versions_active', table_name='model_versions')

    op.drop_table('model_versions')
