"""CA database: authorities, certificates, crls

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('certificate_authorities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('cert_der', sa.LargeBinary(), nullable=False),
    sa.Column('key_pem', sa.Text(), nullable=False),
    sa.Column('spki_sha256', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('key_type', sa.String(length=16), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('policy', sa.JSON(), nullable=False),
    sa.Column('copy_extensions', sa.String(length=8), nullable=False),
    sa.Column('unique_subject', sa.Boolean(), nullable=False),
    sa.Column('default_days', sa.Integer(), nullable=False),
    sa.Column('profile_days', sa.JSON(), nullable=False),
    sa.Column('crl_hours', sa.Integer(), nullable=False),
    sa.Column('crl_include_expired', sa.Boolean(), nullable=False),
    sa.Column('clock_skew_seconds', sa.Integer(), nullable=False),
    sa.Column('serial_mode', sa.String(length=12), nullable=False),
    sa.Column('next_serial', sa.String(length=42), nullable=False),
    sa.Column('crl_number', sa.BigInteger(), nullable=False),
    sa.Column('crl_urls', sa.JSON(), nullable=False),
    sa.Column('ca_issuers_urls', sa.JSON(), nullable=False),
    sa.Column('ocsp_urls', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['certificate_authorities.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('spki_sha256')
    )
    op.create_table('certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ca_id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=42), nullable=False),
    sa.Column('status', sa.String(length=1), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('active_subject', sa.String(length=64), nullable=True),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.String(length=24), nullable=True),
    sa.Column('invalidity_date', sa.DateTime(timezone=True), nullable=True),
    sa.Column('profile', sa.String(length=32), nullable=True),
    sa.Column('der', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ca_id'], ['certificate_authorities.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ca_id', 'active_subject', name='uq_certificates_ca_active_subject'),
    sa.UniqueConstraint('ca_id', 'serial', name='uq_certificates_ca_serial')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index('ix_certificates_ca_status', ['ca_id', 'status'], unique=False)
        batch_op.create_index('ix_certificates_serial', ['serial'], unique=False)

    op.create_table('crls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ca_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.BigInteger(), nullable=False),
    sa.Column('this_update', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_update', sa.DateTime(timezone=True), nullable=False),
    sa.Column('entries', sa.Integer(), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['ca_id'], ['certificate_authorities.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ca_id', 'number', name='uq_crls_ca_number')
    )



def downgrade() -> None:

    op.drop_table('crls')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index('ix_certificates_serial')
        batch_op.drop_index('ix_certificates_ca_status')

    op.drop_table('certificates')
    op.drop_table('certificate_authorities')

