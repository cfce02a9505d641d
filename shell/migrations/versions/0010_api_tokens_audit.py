"""API tokens, the append-only audit log with its hash chain, idempotent API submits.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=10), nullable=False),
        sa.Column('cas', sa.JSON(), nullable=True),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('expires_at', UTC, nullable=True),
        sa.Column('last_used_at', UTC, nullable=True),
        sa.Column('revoked_at', UTC, nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
        sa.UniqueConstraint('token_sha256'))
    op.create_table(
        'audit_entries',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('at', UTC, nullable=False),
        sa.Column('actor', sa.String(length=128), nullable=False),
        sa.Column('via', sa.String(length=10), nullable=False),
        sa.Column('source', sa.String(length=255), nullable=True),
        sa.Column('action', sa.String(length=40), nullable=False),
        sa.Column('target', sa.String(length=300), nullable=True),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('prev_hash', sa.String(length=64), nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_audit_entries_action', 'audit_entries', ['action'])
    op.create_index('ix_audit_entries_target', 'audit_entries', ['target'])
    head = op.create_table(
        'audit_head',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('last_id', sa.Integer(), nullable=False),
        sa.Column('last_hash', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.bulk_insert(head, [{"id": 1, "last_id": 0, "last_hash": GENESIS}])
    op.create_table(
        'idempotent_requests',
        sa.Column('token_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('request_sha256', sa.String(length=64), nullable=False),
        sa.Column('answer', sa.JSON(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id']),
        sa.PrimaryKeyConstraint('token_id', 'key'))


def downgrade() -> None:
    op.drop_table('idempotent_requests')
    op.drop_table('audit_head')
    op.drop_table('audit_entries')
    op.drop_table('api_tokens')
