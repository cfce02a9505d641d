"""OCSP: delegated responder certificates per CA, and the status generation a revocation
bumps so every responder process sees it on its next request.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table('certificate_authorities') as batch:
        batch.add_column(sa.Column('status_generation', sa.BigInteger(), nullable=False,
                                   server_default='0'))
    op.create_table(
        'ocsp_responders',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ca_id', sa.Integer(), nullable=False),
        sa.Column('serial', sa.String(length=42), nullable=False),
        sa.Column('cert_der', sa.LargeBinary(), nullable=False),
        sa.Column('key_pem', sa.Text(), nullable=False),
        sa.Column('not_before', UTC, nullable=False),
        sa.Column('not_after', UTC, nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['ca_id'], ['certificate_authorities.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('ca_id', 'serial', name='uq_ocsp_responders_serial'))
    op.create_table(
        'ocsp_invalidations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ca_id', sa.Integer(), nullable=False),
        sa.Column('generation', sa.BigInteger(), nullable=False),
        sa.Column('serial', sa.String(length=42), nullable=False),
        sa.Column('at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['ca_id'], ['certificate_authorities.id']),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_ocsp_invalidations_ca_generation', 'ocsp_invalidations',
                    ['ca_id', 'generation'])


def downgrade() -> None:
    op.drop_index('ix_ocsp_invalidations_ca_generation', 'ocsp_invalidations')
    op.drop_table('ocsp_invalidations')
    op.drop_table('ocsp_responders')
    with op.batch_alter_table('certificate_authorities') as batch:
        batch.drop_column('status_generation')
