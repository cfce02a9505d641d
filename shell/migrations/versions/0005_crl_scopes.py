"""Installed CRLs kept per issuer and scope (issuingDistributionPoint), and a note on a CRL
taken against the rules (an upload with --force)

Existing rows get the scope of the CRL they store, computed from its DER by
``ca.crl_scope`` itself: a migration with its own copy of the rule could give a row a
scope text the running code never produces, and the next CRL of that scope would then
not replace it. A CRL that the old code let a CRL of another scope replace (a partition
installed over the complete CRL) is made current again for its own scope while it has not
expired: its revocations were lost only because of that bug.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
import datetime as dt

import sqlalchemy as sa
from alembic import op
from cryptography import x509

from ca.crl_scope import COMPLETE_SCOPE, scope_of

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_crls = sa.table(
    'installed_crls', sa.column('id', sa.Integer), sa.column('issuer_key', sa.String),
    sa.column('origin', sa.String), sa.column('scope', sa.Text),
    sa.column('scope_key', sa.String), sa.column('der', sa.LargeBinary),
    sa.column('current', sa.Boolean), sa.column('installed_at', sa.DateTime(timezone=True)),
    sa.column('replaced_at', sa.DateTime(timezone=True)),
    sa.column('next_update', sa.DateTime(timezone=True)))


def upgrade() -> None:
    with op.batch_alter_table('installed_crls') as batch:
        batch.drop_index('uq_installed_crls_one_current')
        batch.add_column(sa.Column('scope', sa.Text(), nullable=True))
        batch.add_column(sa.Column('scope_key', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('note', sa.Text(), nullable=True))
    conn = op.get_bind()
    _fill_scopes(conn)
    _restore_displaced(conn)
    with op.batch_alter_table('installed_crls') as batch:
        batch.alter_column('scope', existing_type=sa.Text(), nullable=False)
        batch.alter_column('scope_key', existing_type=sa.String(length=64), nullable=False)
    op.create_index('uq_installed_crls_one_current', 'installed_crls',
                    ['issuer_key', 'scope_key', 'origin'], unique=True,
                    sqlite_where=sa.text('current'), postgresql_where=sa.text('current'))


def _fill_scopes(conn) -> None:
    """One row at a time: a stored CRL can be tens of MB."""
    ids = conn.execute(sa.select(_crls.c.id).order_by(_crls.c.id)).scalars().all()
    for row_id in ids:
        der = conn.execute(sa.select(_crls.c.der).where(_crls.c.id == row_id)).scalar_one()
        try:
            scope = scope_of(x509.load_der_x509_crl(der))
        except ValueError:  # cannot happen for a CRL pkiq installed; keep the row usable
            scope = COMPLETE_SCOPE
        conn.execute(_crls.update().where(_crls.c.id == row_id).values(
            scope=scope.text, scope_key=scope.key))


def _restore_displaced(conn) -> None:
    """The newest CRL of a scope that is not current, and was replaced by the very next
    install of its issuer and origin (replaced_at == that row's installed_at) whose CRL has
    another scope, lost its place to that other scope: make it current again if it is still
    within its nextUpdate. A CRL removed by hand has no such successor and stays removed."""
    rows = conn.execute(sa.select(
        _crls.c.id, _crls.c.issuer_key, _crls.c.origin, _crls.c.scope_key, _crls.c.current,
        _crls.c.installed_at, _crls.c.replaced_at, _crls.c.next_update).order_by(
        _crls.c.id)).all()
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row.issuer_key, row.origin), []).append(row)
    now = dt.datetime.now(dt.UTC)
    for history in groups.values():
        current_scopes = {row.scope_key for row in history if row.current}
        newest: dict[str, int] = {}
        for index, row in enumerate(history):
            newest[row.scope_key] = index
        for scope_key, index in newest.items():
            row = history[index]
            if scope_key in current_scopes or index + 1 == len(history):
                continue
            successor = history[index + 1]
            if successor.scope_key != scope_key and row.replaced_at is not None and \
                    _same_time(row.replaced_at, successor.installed_at) and \
                    _aware(row.next_update) > now:
                conn.execute(_crls.update().where(_crls.c.id == row.id).values(
                    current=True, replaced_at=None))


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)  # SQLite: naive UTC


def _same_time(a: dt.datetime, b: dt.datetime) -> bool:
    return _aware(a) == _aware(b)


def downgrade() -> None:
    """Back to one current CRL per issuer and origin: the complete scope's where there is
    one, else the newest; the others become history."""
    conn = op.get_bind()
    op.drop_index('uq_installed_crls_one_current', table_name='installed_crls')
    rows = conn.execute(sa.select(_crls.c.id, _crls.c.issuer_key, _crls.c.origin,
                                  _crls.c.scope_key).where(_crls.c.current)
                        .order_by(_crls.c.id)).all()
    keep: dict[tuple, tuple] = {}
    for row in rows:
        rank = (row.scope_key == COMPLETE_SCOPE.key, row.id)
        group = (row.issuer_key, row.origin)
        if group not in keep or rank > keep[group]:
            keep[group] = rank
    kept = {rank[1] for rank in keep.values()}
    for row in rows:
        if row.id not in kept:
            conn.execute(_crls.update().where(_crls.c.id == row.id).values(current=False))
    with op.batch_alter_table('installed_crls') as batch:
        batch.drop_column('note')
        batch.drop_column('scope_key')
        batch.drop_column('scope')
    op.create_index('uq_installed_crls_one_current', 'installed_crls',
                    ['issuer_key', 'origin'], unique=True,
                    sqlite_where=sa.text('current'), postgresql_where=sa.text('current'))
