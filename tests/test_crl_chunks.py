"""Installed CRLs are stored in chunks (migration 0007): no statement binds more than
``crl_install.CHUNK`` bytes of a CRL, what is read back is the DER as received, replaced
CRLs leave no chunks behind, and rows of the old schema move into chunks and back."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography import x509
from sqlalchemy import event, select

from ca import crl_install, trust
from ca.crl_scope import COMPLETE_SCOPE
from ca.models import InstalledCrl, InstalledCrlChunk
from shell.db import alembic_config, make_engine, session_factory, transaction

from . import crlfactory as cf

CA = cf.issuer("Chunk Test CA")
NOW = cf.T0 + dt.timedelta(hours=1)
CHUNK = crl_install.CHUNK


def install(sessions, der: bytes) -> crl_install.InstallOutcome:
    with transaction(sessions) as session:
        checked = crl_install.check(session, x509.load_der_x509_crl(der), der, NOW,
                                    skew=dt.timedelta(minutes=5))
        return crl_install.install(session, checked, origin="fetched", source="test",
                                   now=NOW)


@pytest.fixture
def trusted(sessions):
    with transaction(sessions) as session:
        trust.add(session, CA.cert_pem, NOW)
    return sessions


@pytest.mark.parametrize("entries", [0, 1, 47_000, 100_000, 160_000])
def test_no_statement_binds_more_than_a_chunk_and_the_der_reads_back(engine, trusted,
                                                                      entries):
    """Before, the install bound the whole DER as one parameter (the driver and SQLite each
    copied it). CRLs of a few hundred bytes, just under one chunk, and of three and four."""
    der = cf.crl_der(entries, ca=CA)
    bound: list[int] = []

    def record(_conn, _cursor, _statement, parameters, _context, _many):
        for value in (parameters.values() if isinstance(parameters, dict) else parameters):
            if not isinstance(value, memoryview):  # psycopg wraps binary values in Binary
                value = getattr(value, "obj", value)
            if isinstance(value, bytes | bytearray | memoryview):
                bound.append(len(value))

    event.listen(engine, "before_cursor_execute", record)
    try:
        outcome = install(trusted, der)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert outcome.action == "installed"
    assert bound and max(bound) <= CHUNK, (bound, len(der))
    with transaction(trusted) as session:
        row = crl_install.current(session, trust.name_key(CA.cert.subject), "fetched")
        assert crl_install.stored_der(session, row) == der
        sizes = list(session.scalars(select(sa.func.length(InstalledCrlChunk.data)).where(
            InstalledCrlChunk.crl_id == row.id).order_by(InstalledCrlChunk.seq)))
    assert len(sizes) == math.ceil(len(der) / CHUNK) and sum(sizes) == len(der)
    assert all(size == CHUNK for size in sizes[:-1])


def test_replaced_crls_trimmed_from_the_history_take_their_chunks(trusted):
    """A CRL trimmed from the history (HISTORY_KEEP per issuer, scope and origin) must not
    leave its chunks behind: nothing else would ever delete them."""
    kept = crl_install.HISTORY_KEEP + 1
    for number in range(1, kept + 4):
        install(trusted, cf.crl_der(3, ca=CA, number=number))
    with transaction(trusted) as session:
        rows = set(session.scalars(select(InstalledCrl.id)))
        chunked = set(session.scalars(select(InstalledCrlChunk.crl_id).distinct()))
    assert len(rows) == kept and chunked == rows


# ---------------------------------------------------------------- migration 0007

_OLD = sa.table(
    'installed_crls', sa.column('id', sa.Integer), sa.column('issuer_key', sa.String),
    sa.column('issuer', sa.Text), sa.column('scope', sa.Text),
    sa.column('scope_key', sa.String), sa.column('origin', sa.String),
    sa.column('source', sa.String), sa.column('number', sa.String),
    sa.column('this_update', sa.DateTime(timezone=True)),
    sa.column('next_update', sa.DateTime(timezone=True)), sa.column('entries', sa.Integer),
    sa.column('sha256', sa.String), sa.column('der', sa.LargeBinary),
    sa.column('current', sa.Boolean), sa.column('installed_at', sa.DateTime(timezone=True)),
    sa.column('replaced_at', sa.DateTime(timezone=True)), sa.column('note', sa.Text))

# Around the chunk size and on both sides of it; the migration does not parse them.
SIZES = [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7]


def test_stored_crls_move_into_chunks_and_back(db_url):
    engine = make_engine(db_url)
    try:
        command.upgrade(alembic_config(engine), "0006")
        ders = [os.urandom(size) for size in SIZES] + [cf.crl_der(5, ca=CA)]
        with engine.begin() as conn:
            conn.execute(_OLD.insert(), [{
                "id": 10 + index, "issuer_key": f"{index:064x}", "issuer": f"/CN={index}",
                "scope": "complete", "scope_key": COMPLETE_SCOPE.key, "origin": "fetched",
                "source": None, "number": "1", "this_update": cf.T0,
                "next_update": cf.T0 + dt.timedelta(days=7), "entries": 0,
                "sha256": hashlib.sha256(der).hexdigest(), "der": der, "current": True,
                "installed_at": cf.T0, "replaced_at": None, "note": None}
                for index, der in enumerate(ders)])
        command.upgrade(alembic_config(engine), "head")
        with transaction(session_factory(engine)) as session:
            rows = list(session.scalars(select(InstalledCrl).order_by(InstalledCrl.id)))
            assert [crl_install.stored_der(session, row) for row in rows] == ders
            biggest = max(session.scalars(select(sa.func.length(InstalledCrlChunk.data))))
        assert biggest == CHUNK
        assert "der" not in {c["name"] for c in sa.inspect(engine).get_columns(
            "installed_crls")}
        command.downgrade(alembic_config(engine), "0006")
        with engine.connect() as conn:
            back = conn.execute(select(_OLD.c.der).order_by(_OLD.c.id)).scalars().all()
        assert back == ders
        assert "installed_crl_chunks" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
