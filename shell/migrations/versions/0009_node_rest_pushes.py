"""Expressway REST pushes: each node's API settings and last drift check, when it last
fetched its CRL bundle, rollouts and their per-peer push jobs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'node_apis',
        sa.Column('node_id', sa.Integer(), nullable=False),
        sa.Column('address', sa.String(length=253), nullable=True),
        sa.Column('port', sa.Integer(), nullable=False),
        sa.Column('username', sa.String(length=128), nullable=True),
        sa.Column('password_sealed', sa.Text(), nullable=True),
        sa.Column('credentials_file', sa.Text(), nullable=True),
        sa.Column('pin_sha256', sa.String(length=64), nullable=True),
        sa.Column('release', sa.String(length=16), nullable=False),
        sa.Column('endpoints', sa.JSON(), nullable=False),
        sa.Column('crl_fetch_hours', sa.Integer(), nullable=False),
        sa.Column('managed_cas', sa.JSON(), nullable=False),
        sa.Column('auth_refused_at', UTC, nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.Column('drift', sa.JSON(), nullable=False),
        sa.Column('drift_checked_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['node_id'], ['expressway_nodes.id']),
        sa.PrimaryKeyConstraint('node_id'))
    op.create_table(
        'bundle_fetches',
        sa.Column('node_id', sa.Integer(), nullable=False),
        sa.Column('fetched_at', UTC, nullable=False),
        sa.Column('remote', sa.String(length=64), nullable=True),
        sa.Column('path', sa.String(length=300), nullable=True),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['node_id'], ['expressway_nodes.id']),
        sa.PrimaryKeyConstraint('node_id'))
    op.create_table(
        'rollouts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('target', sa.String(length=300), nullable=False),
        sa.Column('peers', sa.JSON(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('restart', sa.Boolean(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('error_code', sa.Integer(), nullable=True),
        sa.Column('next_try_at', UTC, nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.Column('finished_at', UTC, nullable=True),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('uq_rollouts_one_open', 'rollouts', ['target'], unique=True,
                    sqlite_where=sa.text("state NOT IN ('done', 'cancelled')"),
                    postgresql_where=sa.text("state NOT IN ('done', 'cancelled')"))
    op.create_table(
        'push_jobs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('rollout_id', sa.Integer(), nullable=False),
        sa.Column('node_id', sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('generation', sa.Integer(), nullable=True),
        sa.Column('digest', sa.String(length=64), nullable=True),
        sa.Column('server_sha256', sa.String(length=64), nullable=True),
        sa.Column('result', sa.JSON(), nullable=False),
        sa.Column('claim', sa.String(length=32), nullable=True),
        sa.Column('restarted_at', UTC, nullable=True),
        sa.Column('next_try_at', UTC, nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('started_at', UTC, nullable=True),
        sa.Column('finished_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['node_id'], ['expressway_nodes.id']),
        sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id']),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_push_jobs_rollout_id', 'push_jobs', ['rollout_id'])
    op.create_index('ix_push_jobs_node_id', 'push_jobs', ['node_id'])


def downgrade() -> None:
    op.drop_table('push_jobs')
    op.drop_table('rollouts')
    op.drop_table('bundle_fetches')
    op.drop_table('node_apis')
