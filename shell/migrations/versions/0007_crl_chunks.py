"""Installed CRLs stored in 1 MiB chunks of their own table, not as one column value: a
million-entry CRL bound as one parameter cost one or two more whole copies of it while it
was written (the driver's and SQLite's row record), past issue 10's memory goal.

Existing rows are moved one at a time, and one chunk per statement (a stored CRL can be
tens of MB); the downgrade joins them back the same way.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CHUNK = 1 << 20  # ca.crl_install.CHUNK when this was written

_crls = sa.table('installed_crls', sa.column('id', sa.Integer),
                 sa.column('der', sa.LargeBinary))
_chunks = sa.table('installed_crl_chunks', sa.column('crl_id', sa.Integer),
                   sa.column('seq', sa.Integer), sa.column('data', sa.LargeBinary))


def upgrade() -> None:
    op.create_table(
        'installed_crl_chunks',
        sa.Column('crl_id', sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('crl_id', 'seq'))
    conn = op.get_bind()
    for row_id in conn.execute(sa.select(_crls.c.id).order_by(_crls.c.id)).scalars().all():
        der = conn.execute(sa.select(_crls.c.der).where(_crls.c.id == row_id)).scalar_one()
        view = memoryview(der)
        for seq, start in enumerate(range(0, len(der), CHUNK)):
            conn.execute(_chunks.insert().values(crl_id=row_id, seq=seq,
                                                 data=view[start:start + CHUNK]))
        del view, der
    with op.batch_alter_table('installed_crls') as batch:
        batch.drop_column('der')


def downgrade() -> None:
    with op.batch_alter_table('installed_crls') as batch:
        batch.add_column(sa.Column('der', sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    for row_id in conn.execute(sa.select(_crls.c.id).order_by(_crls.c.id)).scalars().all():
        der = b"".join(conn.execute(sa.select(_chunks.c.data).where(
            _chunks.c.crl_id == row_id).order_by(_chunks.c.seq)).scalars())
        conn.execute(_crls.update().where(_crls.c.id == row_id).values(der=der))
    with op.batch_alter_table('installed_crls') as batch:
        batch.alter_column('der', existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table('installed_crl_chunks')
