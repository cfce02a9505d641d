"""What each CRL distribution point is known to serve: (issuer, scope) pairs learned at its
first success or from the trusted CA whose CDP names it, so that a point that starts serving
another issuer is seen, and each issuer is judged over all of its points.

Existing points start from the issuers they last served, any scope.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_points = sa.table('crl_distribution_points', sa.column('id', sa.Integer),
                   sa.column('issuers', sa.JSON), sa.column('serves', sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table('crl_distribution_points') as batch:
        batch.add_column(sa.Column('serves', sa.JSON(), nullable=True))
    conn = op.get_bind()
    for row_id, issuers in conn.execute(sa.select(_points.c.id, _points.c.issuers)).all():
        conn.execute(_points.update().where(_points.c.id == row_id).values(
            serves=[[key, None] for key in issuers or []]))


def downgrade() -> None:
    with op.batch_alter_table('crl_distribution_points') as batch:
        batch.drop_column('serves')
