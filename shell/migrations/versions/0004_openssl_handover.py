"""A CA handed over to openssl ca (export-openssl --handover)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('certificate_authorities') as batch:
        batch.add_column(sa.Column('handed_over_at', sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column('handed_over_to', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('certificate_authorities') as batch:
        batch.drop_column('handed_over_to')
        batch.drop_column('handed_over_at')
