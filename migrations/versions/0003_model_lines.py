"""Model lines per project, held-out shares, re-segmentation. Each project gets its active version in
project_models (every existing project keeps the version that was active for the whole instance);
model versions and training runs name their project; labelled images record their fixed held-out
assignment; an image may have several jobs and results (one per model version it was run with).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# Names SQLite's unnamed unique constraints get while batch mode copies the table.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _drop_unique_on_image_id(table: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            batch.drop_constraint(f'uq_{table}_image_id', type_='unique')
        return
    for constraint in sa.inspect(bind).get_unique_constraints(table):
        if constraint['column_names'] == ['image_id']:
            op.drop_constraint(constraint['name'], table, type_='unique')


def _foreign_keys_off() -> None:
    """SQLite's batch mode copies a table, drops it and renames the copy (same rows, same ids); with foreign
    keys enforced, dropping jobs or results that other rows reference fails. Effective before the migration's
    first write, as when upgrading from 0002."""
    if op.get_bind().dialect.name == 'sqlite':
        op.get_bind().exec_driver_sql('PRAGMA foreign_keys=OFF')


def upgrade() -> None:
    _foreign_keys_off()
    active = op.get_bind().execute(sa.text(
        "SELECT version FROM model_versions WHERE active = true ORDER BY created DESC")).scalars().first()
    op.drop_index('ix_model_versions_active', table_name='model_versions')
    with op.batch_alter_table('model_versions') as batch:
        batch.drop_column('active')
        batch.add_column(sa.Column('project_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_model_versions_project_id', 'projects', ['project_id'], ['id'])
        batch.create_index('ix_model_versions_project_id', ['project_id'])
    op.create_table('project_models',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('activated', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.ForeignKeyConstraint(['version'], ['model_versions.version'], ),
    sa.PrimaryKeyConstraint('project_id')
    )
    if active is not None:  # every existing project keeps the version the whole instance was using
        op.get_bind().execute(sa.text("INSERT INTO project_models (project_id, version, activated) "
                                      "SELECT id, :version, CURRENT_TIMESTAMP FROM projects"), {"version": active})

    op.create_table('held_out_images',
    sa.Column('image_id', sa.String(length=32), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('held_out', sa.Boolean(), nullable=False),
    sa.Column('assigned', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('image_id')
    )
    op.create_index('ix_held_out_images_project_id', 'held_out_images', ['project_id'])

    with op.batch_alter_table('training_runs') as batch:
        batch.add_column(sa.Column('project_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_training_runs_project_id', 'projects', ['project_id'], ['id'])

    _drop_unique_on_image_id('jobs')
    _drop_unique_on_image_id('results')
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('model_version', sa.String(length=100), nullable=True))
        batch.create_index('ix_jobs_image_id', ['image_id'])
    with op.batch_alter_table('results') as batch:
        batch.create_index('ix_results_image_id', ['image_id'])


def downgrade() -> None:
    _foreign_keys_off()
    # only the newest job and result of each image survive: the schema before allowed one
    op.execute("DELETE FROM nuclei WHERE result_id IN (SELECT r.id FROM results r WHERE EXISTS "
               "(SELECT 1 FROM results n WHERE n.image_id = r.image_id AND n.id > r.id))")
    op.execute("DELETE FROM results WHERE EXISTS "
               "(SELECT 1 FROM results n WHERE n.image_id = results.image_id AND n.id > results.id)")
    op.execute("DELETE FROM jobs WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = jobs.id) AND EXISTS "
               "(SELECT 1 FROM jobs n WHERE n.image_id = jobs.image_id AND n.id <> jobs.id)")
    with op.batch_alter_table('results') as batch:
        batch.drop_index('ix_results_image_id')
        batch.create_unique_constraint('uq_results_image_id', ['image_id'])
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_image_id')
        batch.drop_column('model_version')
        batch.create_unique_constraint('uq_jobs_image_id', ['image_id'])
    with op.batch_alter_table('training_runs') as batch:
        batch.drop_constraint('fk_training_runs_project_id', type_='foreignkey')
        batch.drop_column('project_id')
    op.drop_index('ix_held_out_images_project_id', table_name='held_out_images')
    op.drop_table('held_out_images')
    with op.batch_alter_table('model_versions') as batch:
        batch.drop_index('ix_model_versions_project_id')
        batch.drop_constraint('fk_model_versions_project_id', type_='foreignkey')
        batch.drop_column('project_id')
        batch.add_column(sa.Column('active', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index('ix_model_versions_active', 'model_versions', ['active'])
    default_version = ("(SELECT pm.version FROM project_models pm JOIN projects p ON p.id = pm.project_id "
                       "WHERE p.name = 'default')")
    op.execute(f"UPDATE model_versions SET active = true WHERE version = {default_version}")
    op.drop_table('project_models')
