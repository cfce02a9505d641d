"""CRL updater: trusted CA list, distribution points, installed CRLs, leases, alerts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_states',
    sa.Column('key', sa.String(length=2100), nullable=False),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivery_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('crl_distribution_points',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('origin', sa.String(length=12), nullable=False),
    sa.Column('etag', sa.String(length=512), nullable=True),
    sa.Column('last_modified', sa.String(length=64), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('bytes_received', sa.BigInteger(), nullable=True),
    sa.Column('crls_found', sa.Integer(), nullable=True),
    sa.Column('issuers', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('url')
    )
    op.create_table('crl_issuer_status',
    sa.Column('issuer_key', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.Text(), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=2048), nullable=True),
    sa.PrimaryKeyConstraint('issuer_key')
    )
    op.create_table('crl_refresh_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=12), nullable=False),
    sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('holder', sa.String(length=255), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('crl_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('update_time', sa.String(length=5), nullable=False),
    sa.Column('spread_seconds', sa.Integer(), nullable=False),
    sa.Column('seed', sa.String(length=32), nullable=False),
    sa.Column('use_cdp', sa.Boolean(), nullable=False),
    sa.Column('timeout_seconds', sa.Integer(), nullable=False),
    sa.Column('max_bytes', sa.BigInteger(), nullable=False),
    sa.Column('parallelism', sa.Integer(), nullable=False),
    sa.Column('skew_seconds', sa.Integer(), nullable=False),
    sa.Column('warn_hours', sa.Integer(), nullable=False),
    sa.Column('overlap_hours', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('installed_crls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('issuer_key', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.Text(), nullable=False),
    sa.Column('origin', sa.String(length=8), nullable=False),
    sa.Column('source', sa.String(length=2048), nullable=True),
    sa.Column('number', sa.String(length=50), nullable=True),
    sa.Column('this_update', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_update', sa.DateTime(timezone=True), nullable=False),
    sa.Column('entries', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('current', sa.Boolean(), nullable=False),
    sa.Column('installed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('replaced_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('installed_crls', schema=None) as batch_op:
        batch_op.create_index('ix_installed_crls_issuer_current', ['issuer_key', 'current'],
                              unique=False)
        batch_op.create_index('uq_installed_crls_one_current', ['issuer_key', 'origin'],
                              unique=True, sqlite_where=sa.text('current'),
                              postgresql_where=sa.text('current'))

    op.create_table('leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=255), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('trusted_cas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('issuer', sa.Text(), nullable=False),
    sa.Column('subject_key', sa.String(length=64), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('origin', sa.String(length=12), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    with op.batch_alter_table('trusted_cas', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trusted_cas_subject_key'), ['subject_key'],
                              unique=False)



def downgrade() -> None:
    with op.batch_alter_table('trusted_cas', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trusted_cas_subject_key'))

    op.drop_table('trusted_cas')
    op.drop_table('leases')
    with op.batch_alter_table('installed_crls', schema=None) as batch_op:
        batch_op.drop_index('uq_installed_crls_one_current')
        batch_op.drop_index('ix_installed_crls_issuer_current')

    op.drop_table('installed_crls')
    op.drop_table('crl_settings')
    op.drop_table('crl_refresh_runs')
    op.drop_table('crl_issuer_status')
    op.drop_table('crl_distribution_points')
    op.drop_table('alert_states')
