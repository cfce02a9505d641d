"""Expressway nodes and clusters, named trusted sets, and node credentials (server keys,
CSRs in progress and certificates), for the per-node stores.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'trusted_sets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('members', sa.JSON(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'))
    op.create_table(
        'expressway_clusters',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('fqdn', sa.String(length=253), nullable=False),
        sa.Column('model', sa.String(length=20), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'))
    op.create_table(
        'expressway_nodes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('fqdn', sa.String(length=253), nullable=False),
        sa.Column('role', sa.String(length=1), nullable=False),
        sa.Column('cluster_id', sa.Integer(), nullable=True),
        sa.Column('chat_node_aliases', sa.JSON(), nullable=False),
        sa.Column('phone_security_profiles', sa.JSON(), nullable=False),
        sa.Column('uc_domains', sa.JSON(), nullable=False),
        sa.Column('uc_domain_format', sa.String(length=12), nullable=False),
        sa.Column('trusted_set_id', sa.Integer(), nullable=True),
        sa.Column('store_dir', sa.Text(), nullable=True),
        sa.Column('keep_generations', sa.Integer(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.Column('publish_due_at', UTC, nullable=True),
        sa.Column('publish_reason', sa.Text(), nullable=True),
        sa.Column('publish_attempts', sa.Integer(), nullable=False),
        sa.Column('published_at', UTC, nullable=True),
        sa.Column('published_generation', sa.Integer(), nullable=True),
        sa.Column('published_digest', sa.String(length=64), nullable=True),
        sa.Column('published_inputs', sa.String(length=64), nullable=True),
        sa.Column('publish_error', sa.Text(), nullable=True),
        sa.Column('coverage_gaps', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['cluster_id'], ['expressway_clusters.id']),
        sa.ForeignKeyConstraint(['trusted_set_id'], ['trusted_sets.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('fqdn'))
    op.create_table(
        'node_credentials',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('node_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('source', sa.String(length=10), nullable=False),
        sa.Column('key_type', sa.String(length=16), nullable=False),
        sa.Column('key_pem', sa.Text(), nullable=False),
        sa.Column('spki_sha256', sa.String(length=64), nullable=False),
        sa.Column('csr_der', sa.LargeBinary(), nullable=True),
        sa.Column('cert_der', sa.LargeBinary(), nullable=True),
        sa.Column('chain_pem', sa.Text(), nullable=True),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('warnings', sa.JSON(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('activated_at', UTC, nullable=True),
        sa.Column('ended_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['signing_jobs.id']),
        sa.ForeignKeyConstraint(['node_id'], ['expressway_nodes.id']),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_node_credentials_node_id', 'node_credentials', ['node_id'])
    for state in ('pending', 'active'):
        op.create_index(f'uq_node_credentials_one_{state}', 'node_credentials', ['node_id'],
                        unique=True, sqlite_where=sa.text(f"state = '{state}'"),
                        postgresql_where=sa.text(f"state = '{state}'"))


def downgrade() -> None:
    op.drop_table('node_credentials')
    op.drop_table('expressway_nodes')
    op.drop_table('expressway_clusters')
    op.drop_table('trusted_sets')
