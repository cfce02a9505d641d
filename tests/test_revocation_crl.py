"""Revocation, status, updatedb and CRL generation (RFC 5280 5.2/5.3)."""

import datetime as dt

import pytest
from cryptography import x509
from sqlalchemy import select

from ca import authority
from ca.errors import BadInput, Conflict, NotFound
from ca.models import Crl
from shell.db import transaction

from .conftest import make_csr
from .domain import PASS, in_threads, new_ca, sign


def revoke(sessions, clock, serial, **kw):
    with transaction(sessions) as session:
        ca = authority.get_ca(session, "Root")
        return authority.revoke(session, ca, serial, now=clock(), **kw)


def gencrl(sessions, clock, name="Root"):
    with transaction(sessions) as session:
        ca = authority.get_ca(session, name)
        row = authority.generate_crl(session, ca, authority.load_signer(ca, PASS), clock())
        return x509.load_der_x509_crl(row.der)


def status(sessions, clock, serial):
    with transaction(sessions) as session:
        return authority.status(session, authority.get_ca(session, "Root"), serial, clock())[1]


def test_revoke_with_reason_and_invalidity_date_appears_on_the_crl(sessions, clock):
    ca, signer = new_ca(sessions, clock)
    cert = sign(sessions, clock, "Root", make_csr()).certificate
    compromised = clock() - dt.timedelta(days=2)
    revoke(sessions, clock, cert.serial_number, reason="keycompromise",
           invalidity_date=compromised)
    crl = gencrl(sessions, clock)
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry.revocation_date_utc == clock().replace(microsecond=0)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    assert entry.extensions.get_extension_for_class(x509.InvalidityDate).value \
        .invalidity_date_utc == compromised
    assert crl.is_signature_valid(signer.public_key())
    ca_cert = x509.load_der_x509_certificate(ca.cert_der)
    assert crl.issuer == ca_cert.subject
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(hours=168)


def test_unspecified_reason_is_omitted_as_rfc5280_recommends(sessions, clock):
    new_ca(sessions, clock)
    cert = sign(sessions, clock, "Root", make_csr()).certificate
    revoke(sessions, clock, cert.serial_number)
    entry = gencrl(sessions, clock).get_revoked_certificate_by_serial_number(cert.serial_number)
    with pytest.raises(x509.ExtensionNotFound):
        entry.extensions.get_extension_for_class(x509.CRLReason)


def test_crl_numbers_only_increase(sessions, clock):
    new_ca(sessions, clock, crl_hours=24)
    numbers = []
    for _ in range(3):
        crl = gencrl(sessions, clock)
        numbers.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        clock.advance(hours=1)
    assert numbers == [1, 2, 3]


def test_expired_revoked_entries_kept_or_dropped_as_configured(sessions, clock):
    new_ca(sessions, clock, name="Keep", crl_include_expired=True)
    new_ca(sessions, clock, name="Drop", crl_include_expired=False)
    serials = {}
    for name in ("Keep", "Drop"):
        cert = sign(sessions, clock, name, make_csr(), days=10).certificate
        with transaction(sessions) as session:
            authority.revoke(session, authority.get_ca(session, name), cert.serial_number,
                             now=clock(), reason="superseded")
        serials[name] = cert.serial_number
    clock.advance(days=11)
    kept = gencrl(sessions, clock, "Keep")
    dropped = gencrl(sessions, clock, "Drop")
    assert kept.get_revoked_certificate_by_serial_number(serials["Keep"]) is not None
    assert dropped.get_revoked_certificate_by_serial_number(serials["Drop"]) is None


def test_status_valid_revoked_expired_and_updatedb(sessions, clock):
    new_ca(sessions, clock)
    short = sign(sessions, clock, "Root", make_csr("a.example.com"), days=1).certificate
    long = sign(sessions, clock, "Root", make_csr("b.example.com"), days=100).certificate
    gone = sign(sessions, clock, "Root", make_csr("c.example.com"), days=100).certificate
    revoke(sessions, clock, gone.serial_number, reason="superseded")
    assert status(sessions, clock, short.serial_number) == "Valid"
    assert status(sessions, clock, gone.serial_number) == "Revoked"
    clock.advance(days=2)
    assert status(sessions, clock, short.serial_number) == "Expired"
    with transaction(sessions) as session:
        assert authority.update_db(session, authority.get_ca(session, "Root"), clock()) == 1
        record = authority.find_certificate(session, authority.get_ca(session, "Root"),
                                            short.serial_number)
        assert record.status == "E"
    assert status(sessions, clock, long.serial_number) == "Valid"


def test_revoking_twice_unknown_serial_bad_reason_future_compromise(sessions, clock):
    new_ca(sessions, clock)
    cert = sign(sessions, clock, "Root", make_csr()).certificate
    revoke(sessions, clock, cert.serial_number, reason="superseded")
    with pytest.raises(Conflict, match="already revoked"):
        revoke(sessions, clock, cert.serial_number)
    with pytest.raises(NotFound):
        revoke(sessions, clock, 0x1234)
    with pytest.raises(BadInput, match="unknown revocation reason"):
        revoke(sessions, clock, cert.serial_number, reason="lost")
    other = sign(sessions, clock, "Root", make_csr("x.example.com")).certificate
    with pytest.raises(BadInput, match="future"):
        revoke(sessions, clock, other.serial_number,
               invalidity_date=clock() + dt.timedelta(days=1))


def test_concurrent_crl_generation_never_repeats_a_number(sessions, clock):
    """Threads with their own connections stand in for workers on several hosts: the CA row
    lock (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite) serialises them."""
    new_ca(sessions, clock)

    def five_crls():
        for _ in range(5):
            gencrl(sessions, clock)

    assert in_threads(five_crls, [()] * 4) == [None] * 4
    with transaction(sessions) as session:
        numbers = session.scalars(select(Crl.number)).all()
    assert sorted(numbers) == list(range(1, 21))
