"""Signing jobs (the queue's source of truth) and the per-CA approval mode

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signing_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ca_id', sa.Integer(), nullable=False),
    sa.Column('profile', sa.String(length=32), nullable=False),
    sa.Column('days', sa.Integer(), nullable=True),
    sa.Column('node', sa.String(length=255), nullable=True),
    sa.Column('requester', sa.String(length=255), nullable=False),
    sa.Column('csr_der', sa.LargeBinary(), nullable=False),
    sa.Column('csr_sha256', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('serial', sa.String(length=42), nullable=True),
    sa.Column('decided_by', sa.String(length=255), nullable=True),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['ca_id'], ['certificate_authorities.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ca_id', 'profile', 'csr_sha256', name='uq_signing_jobs_request')
    )
    with op.batch_alter_table('signing_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_signing_jobs_state_updated', ['state', 'updated_at'],
                              unique=False)

    with op.batch_alter_table('certificate_authorities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approval', sa.String(length=8), nullable=False,
                                      server_default='auto'))


def downgrade() -> None:
    with op.batch_alter_table('certificate_authorities', schema=None) as batch_op:
        batch_op.drop_column('approval')

    with op.batch_alter_table('signing_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_signing_jobs_state_updated')

    op.drop_table('signing_jobs')

