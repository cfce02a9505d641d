"""CRLs from outside (ca.crl_install): what check() refuses (RFC 5280 5.2/5.3 structure, the
signature of a trusted or pkiq CA, the dates), how install() keeps the last good CRL and its
history, and how a fetched CRL overrides a manual upload."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID, ObjectIdentifier
from sqlalchemy import select

from ca import authority, crl_install, trust
from ca.crl_install import CrlRejected
from ca.crl_scope import COMPLETE_SCOPE
from ca.errors import BadInput, BadSignature, NotFound, PkiqError
from ca.models import CrlIssuerStatus, InstalledCrl
from shell.db import transaction

from .conftest import T0
from .crlfactory import Issuer, _elements, _tlv, issuer
from .domain import PASS, new_ca

DER = serialization.Encoding.DER
HOUR = dt.timedelta(hours=1)
WEEK = dt.timedelta(days=7)
SKEW = dt.timedelta(minutes=5)
URL = "http://pki.example.com/issuing.crl"
UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1.2")

CA = issuer("Install Test CA")  # self-signed EC root, no keyUsage (so cRLSign is not limited)
LABEL = "/O=Example/CN=Install Test CA"
KEY = trust.name_key(CA.cert.subject)


# ---------------------------------------------------------------- CRL builders

def build_crl(ca: Issuer = CA, *, number: int | None = 1, this_update=T0 - HOUR,
              next_update=T0 + WEEK, extensions=(), entries=(), key=None) -> bytes:
    """A CRL with whatever extensions a test needs. ``entries``: (serial, [(ext, critical)]);
    ``key`` signs instead of the issuer's own (a forgery)."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(this_update).next_update(next_update))
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    for serial, entry_extensions in entries:
        revoked = (x509.RevokedCertificateBuilder().serial_number(serial)
                   .revocation_date(this_update - HOUR))
        for ext, critical in entry_extensions:
            revoked = revoked.add_extension(ext, critical)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(key or ca.key, hashes.SHA256()).public_bytes(DER)


def without_next_update(der: bytes, ca: Issuer = CA) -> bytes:
    """The same CRL with nextUpdate taken out of the TBSCertList and signed again (pyca's
    builder insists on one; RFC 5280 5.1.2.5 lets the field be absent in the syntax)."""
    fields = _elements(x509.load_der_x509_crl(der).tbs_certlist_bytes)
    # version, signature, issuer, thisUpdate, nextUpdate (UTCTime/GeneralizedTime), ...
    assert fields[4][0] in (0x17, 0x18)
    tbs = _tlv(0x30, b"".join(fields[:4] + fields[5:]))
    signature = ca.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + _elements(der)[1] + _tlv(0x03, b"\x00" + signature))


def self_signed(subject: x509.Name, *, key_usage: x509.KeyUsage | None = None) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(T0 - WEEK).not_valid_after(T0 + 100 * WEEK)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return Issuer(key, builder.sign(key, hashes.SHA256()))


def key_usage(*, crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=True, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


REASONS = [(x509.CRLReason(x509.ReasonFlags.key_compromise), False),
           (x509.InvalidityDate(T0 - WEEK), False)]


# ---------------------------------------------------------------- helpers

def one_sentence(exc: BaseException) -> str:
    """A message a PKI engineer reads at a prompt: a PkiqError, one line, one sentence."""
    assert isinstance(exc, PkiqError), repr(exc)
    message = str(exc)
    assert message and "\n" not in message and len(message) < 300, message
    assert not re.search(r"[.!?]\s+[A-Z]", message), f"more than one sentence: {message}"
    return message


def trust_ca(sessions, clock, *cas: Issuer) -> None:
    with transaction(sessions) as session:
        for ca in cas:
            trust.add(session, ca.cert_pem, clock())


def check(session, der: bytes, now: dt.datetime, skew=SKEW) -> crl_install.CheckedCrl:
    return crl_install.check(session, x509.load_der_x509_crl(der), der, now, skew=skew)


def fetch(sessions, clock, der: bytes) -> crl_install.InstallOutcome:
    """What the nightly refresh does with one CRL: check, then install as fetched."""
    with transaction(sessions) as session:
        return crl_install.install(session, check(session, der, clock()), origin="fetched",
                                   source=URL, now=clock())


def upload(sessions, clock, der: bytes, name="issuing.crl") -> crl_install.InstallOutcome:
    with transaction(sessions) as session:
        return crl_install.upload(session, x509.load_der_x509_crl(der), der, clock(),
                                  skew=SKEW, source=name)


def snapshot(sessions) -> list[tuple]:
    with transaction(sessions) as session:
        return [(r.id, r.origin, r.number, r.current, r.sha256, r.replaced_at)
                for r in session.scalars(select(InstalledCrl).order_by(InstalledCrl.id))]


def current_der(sessions, origin="fetched", key=KEY) -> bytes | None:
    with transaction(sessions) as session:
        row = crl_install.current(session, key, origin)
        return crl_install.stored_der(session, row) if row else None


def refused(sessions, clock, der: bytes, exc_type=CrlRejected, match: str | None = None,
            *, via=fetch) -> str:
    """``der`` is refused with a clear message and the database is exactly as it was."""
    before = snapshot(sessions)
    with pytest.raises(exc_type, match=match) as caught:
        via(sessions, clock, der)
    assert snapshot(sessions) == before
    return one_sentence(caught.value)


@pytest.fixture
def installed(sessions, clock) -> bytes:
    """The CA trusted and its CRL number 1 installed: what a bad CRL must not replace."""
    trust_ca(sessions, clock, CA)
    der = build_crl(number=1, entries=[(1000, [])])
    assert fetch(sessions, clock, der).action == "installed"
    return der


# ---------------------------------------------------------------- structure

IDP_URL = [x509.UniformResourceIdentifier(URL)]


def _idp(**kw) -> x509.IssuingDistributionPoint:
    args = dict(full_name=IDP_URL, relative_name=None, only_contains_user_certs=False,
                only_contains_ca_certs=False, only_some_reasons=None, indirect_crl=False,
                only_contains_attribute_certs=False)
    return x509.IssuingDistributionPoint(**{**args, **kw})


@pytest.mark.parametrize("extensions, entries, match", [
    ([(x509.DeltaCRLIndicator(1), True)], (), "is a delta CRL: pkiq installs complete CRLs"),
    ([(_idp(full_name=None, indirect_crl=True), True)], (), "is an indirect CRL"),
    ([(_idp(only_contains_attribute_certs=True), True)], (),
     "lists attribute certificates only"),
    ([(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)], (),
     "unknown critical extension 1.3.6.1.4.1.55555.1.2; RFC 5280 says it must not be used"),
    ((), [(1001, REASONS), (1002, [(x509.CertificateIssuer(
        [x509.DNSName("other.example.com")]), True)])],
     "has an entry with the critical extension 2.5.29.29"),
    ((), [(1001, [(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)])],
     "has an entry with the critical extension 1.3.6.1.4.1.55555.1.2"),
    # a critical CRL-level extension as well: the pre-scan must still see the entry's
    ([(_idp(), True)], [(1001, REASONS), (1002, [
        (x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)])],
     "has an entry with the critical extension 1.3.6.1.4.1.55555.1.2"),
], ids=["delta", "indirect", "attribute-certs-only", "unknown-critical",
        "entry-certificate-issuer", "entry-unknown-critical",
        "entry-unknown-critical-beside-critical-idp"])
def test_crls_pkiq_cannot_apply_correctly_are_refused(sessions, clock, installed, extensions,
                                                     entries, match):
    bad = build_crl(number=2, extensions=extensions, entries=entries)
    message = refused(sessions, clock, bad, match=match)
    assert message.startswith(f"CRL from {LABEL} ")
    assert current_der(sessions) == installed


@pytest.mark.parametrize("extensions, entries", [
    ((), [(1001, REASONS), (1002, [(x509.CRLReason(x509.ReasonFlags.superseded), False)])]),
    ([(_idp(), True)], [(1001, REASONS)]),
    ([(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), False)], [(1001, REASONS)]),
    ([(x509.AuthorityKeyIdentifier.from_issuer_public_key(CA.key.public_key()), True)],
     [(1001, [(x509.InvalidityDate(T0 - WEEK), True)])]),
], ids=["reason-codes", "critical-idp-full-crl", "unknown-non-critical",
        "understood-critical"])
def test_complete_crls_with_ordinary_extensions_pass(sessions, clock, installed, extensions,
                                                    entries):
    good = build_crl(number=2, extensions=extensions, entries=entries)
    outcome = fetch(sessions, clock, good)
    assert (outcome.action, outcome.number, outcome.row.entries) == ("installed", 2,
                                                                      len(entries))
    with transaction(sessions) as session:  # an IDP naming a point is a scope of its own
        row = crl_install.current(session, KEY, "fetched", outcome.row.scope_key)
        assert crl_install.stored_der(session, row) == good


def test_a_crl_with_a_malformed_extension_is_refused_with_a_clear_error(sessions, clock,
                                                                         installed):
    """pyca parses extensions lazily: the error must come out as a refusal, not a
    ValueError that would end the whole nightly refresh."""
    bad = build_crl(number=2, extensions=[(x509.UnrecognizedExtension(
        ExtensionOID.ISSUING_DISTRIBUTION_POINT, b"\x05\x00"), True)])
    message = refused(sessions, clock, bad, match="malformed")
    assert message.startswith(f"CRL from {LABEL} ")
    bad_entry = build_crl(number=2, entries=[(1001, [(x509.UnrecognizedExtension(
        CRLEntryExtensionOID.CRL_REASON, b"\x05\x00"), True)])])
    refused(sessions, clock, bad_entry, match="malformed")


# ---------------------------------------------------------------- signature

def test_a_crl_signed_by_another_key_is_a_bad_signature(sessions, clock, installed):
    forged = build_crl(number=2, key=ec.generate_private_key(ec.SECP256R1()))
    message = refused(sessions, clock, forged, BadSignature)
    assert message == (f"CRL from {LABEL}: the signature does not verify with the key of the "
                       "trusted CA of that name (signed by another key, or altered)")


def test_a_crl_from_an_issuer_not_trusted_is_refused(sessions, clock, installed):
    stranger = issuer("Stranger CA")
    message = refused(sessions, clock, build_crl(stranger))
    assert message == ("CRL issuer /O=Example/CN=Stranger CA is not in the trusted CA list "
                       "nor a pkiq CA; add the CA with 'pkiq trust add' first")


def test_an_issuer_whose_key_usage_lacks_crl_sign_is_refused(sessions, clock, installed):
    no_crl_sign = self_signed(x509.Name.from_rfc4514_string("CN=Cert Signer Only,O=Example"),
                              key_usage=key_usage(crl_sign=False))
    trust_ca(sessions, clock, no_crl_sign)
    message = refused(sessions, clock, build_crl(no_crl_sign))
    assert message == ("the trusted CA /O=Example/CN=Cert Signer Only may not sign CRLs "
                       "(keyUsage lacks cRLSign)")
    with_crl_sign = self_signed(x509.Name.from_rfc4514_string("CN=CRL Signer,O=Example"),
                                key_usage=key_usage(crl_sign=True))
    trust_ca(sessions, clock, with_crl_sign)
    assert fetch(sessions, clock, build_crl(with_crl_sign)).action == "installed"


def test_a_ca_rekeyed_under_the_same_name_verifies_with_either_key(sessions, clock, installed):
    rekeyed = self_signed(CA.cert.subject)
    trust_ca(sessions, clock, rekeyed)
    assert fetch(sessions, clock, build_crl(rekeyed, number=2)).action == "installed"
    message = refused(sessions, clock, build_crl(number=3, key=ec.generate_private_key(
        ec.SECP256R1())), BadSignature)
    assert "does not verify with the key of any trusted CA of that name" in message


def test_a_pkiq_ca_crl_verifies_without_a_trusted_list_entry(sessions, clock):
    new_ca(sessions, clock, "Own")
    with transaction(sessions) as session:
        ca = authority.get_ca(session, "Own")
        der = authority.generate_crl(session, ca, authority.load_signer(ca, PASS), clock()).der
    clock.advance(minutes=1)
    with transaction(sessions) as session:
        assert trust.list_entries(session) == []
    outcome = fetch(sessions, clock, der)
    assert (outcome.action, outcome.issuer, outcome.number) == (
        "installed", "/C=GB/ST=England/O=Example/CN=Own CA", 1)


# ---------------------------------------------------------------- dates

def test_this_update_in_the_future_is_refused_beyond_the_skew_only(sessions, clock, installed):
    ahead = build_crl(number=2, this_update=T0 + SKEW + dt.timedelta(seconds=1))
    message = refused(sessions, clock, ahead)
    assert message == (f"CRL from {LABEL} has thisUpdate 2026-11-27 10:05:01Z, in the future "
                       "(check the clocks of the CA and of this host)")
    within = build_crl(number=2, this_update=T0 + SKEW)
    assert fetch(sessions, clock, within).action == "installed"


def test_a_crl_without_next_update_is_refused(sessions, clock, installed):
    bare = without_next_update(build_crl(number=2))
    assert x509.load_der_x509_crl(bare).next_update_utc is None
    message = refused(sessions, clock, bare)
    assert message == (f"CRL from {LABEL} has no nextUpdate, so nobody can tell when it goes "
                       "stale (RFC 5280 5.1.2.5 requires it)")


def test_a_crl_past_its_next_update_is_refused(sessions, clock, installed):
    stale = build_crl(number=2, this_update=T0 - WEEK, next_update=T0)  # nextUpdate == now
    message = refused(sessions, clock, stale)
    assert message == (f"CRL from {LABEL} expired at 2026-11-27 10:00:00Z (nextUpdate "
                       "passed); the CA has not published a newer one there")


# ---------------------------------------------------------------- install

def test_a_newer_crl_replaces_the_installed_one_and_the_old_one_is_history(sessions, clock,
                                                                           installed):
    clock.advance(hours=1)
    newer = build_crl(number=2, this_update=T0)
    outcome = fetch(sessions, clock, newer)
    assert (outcome.action, outcome.number) == ("installed", 2)
    with transaction(sessions) as session:
        rows = crl_install.history(session, KEY)
        assert [(r.number, r.current, r.replaced_at, r.source) for r in rows] == [
            ("2", True, None, URL), ("1", False, clock(), URL)]
        assert [crl_install.stored_der(session, r) for r in rows[:2]] == [newer, installed]
        assert (rows[0].entries, rows[0].this_update, rows[0].next_update) == (
            0, T0, T0 + WEEK)


def test_history_keeps_the_latest_replaced_crls_only(sessions, clock, installed, monkeypatch):
    monkeypatch.setattr(crl_install, "HISTORY_KEEP", 2)
    for number in range(2, 6):
        clock.advance(minutes=10)
        fetch(sessions, clock, build_crl(number=number, this_update=clock() - HOUR))
    with transaction(sessions) as session:
        rows = crl_install.history(session, KEY)
    assert [(r.number, r.current) for r in rows] == [("5", True), ("4", False), ("3", False)]


def test_a_lower_crl_number_is_refused_and_the_installed_crl_kept(sessions, clock):
    trust_ca(sessions, clock, CA)
    newest = build_crl(number=7)
    fetch(sessions, clock, newest)
    message = refused(sessions, clock, build_crl(number=6, this_update=T0))
    assert message == (f"CRL from {LABEL}: CRL number 6 is lower than the installed 7 (a "
                       "stale copy, or a replay); the installed CRL is kept")
    assert current_der(sessions) == newest


def test_the_same_crl_number_with_other_content_is_refused(sessions, clock, installed):
    message = refused(sessions, clock, build_crl(number=1, entries=[(1000, []), (1001, [])]))
    assert message == (f"CRL from {LABEL}: CRL number 1 is the installed one's, but the "
                       "content differs (the CA reused a CRL number); the installed CRL is "
                       "kept")


def test_a_higher_number_with_an_older_this_update_is_refused(sessions, clock, installed):
    message = refused(sessions, clock, build_crl(number=2, this_update=T0 - 2 * HOUR))
    assert "thisUpdate 2026-11-27 08:00:00Z is older than the installed CRL's " \
        "2026-11-27 09:00:00Z; the installed CRL is kept" in message


def test_the_same_crl_again_changes_nothing(sessions, clock, installed):
    before = snapshot(sessions)
    clock.advance(hours=1)
    outcome = fetch(sessions, clock, installed)
    assert (outcome.action, outcome.number, outcome.row.id) == ("unchanged", 1, before[0][0])
    assert snapshot(sessions) == before


def test_an_unknown_origin_is_refused(sessions, clock, installed):
    def via(sessions, clock, der):
        with transaction(sessions) as session:
            crl_install.install(session, check(session, der, clock()), origin="ldap",
                                source=None, now=clock())
    message = refused(sessions, clock, build_crl(number=2), BadInput, via=via)
    assert message == "unknown CRL origin 'ldap'"


# ---------------------------------------------------------------- manual uploads

def test_an_upload_replaces_the_previous_manual_crl_an_older_one_only_when_forced(sessions,
                                                                                  clock):
    """The guide: 'This uploads the selected file and replaces any previously uploaded CRL
    file.' An older one would roll revocations back, so only with force (recorded)."""
    trust_ca(sessions, clock, CA)
    first = upload(sessions, clock, build_crl(number=5))
    assert (first.action, first.row.origin, first.row.source) == ("installed", "manual",
                                                                   "issuing.crl")
    clock.advance(hours=1)
    older = build_crl(number=3, this_update=T0 - 3 * HOUR)
    refused(sessions, clock, older, match="lower than the installed 5", via=upload)
    with transaction(sessions) as session:
        forced = crl_install.upload(session, x509.load_der_x509_crl(older), older, clock(),
                                    skew=SKEW, source="older.crl", force=True)
        assert forced.action == "installed" and "--force" in forced.row.note
    assert current_der(sessions, "manual") == older
    assert upload(sessions, clock, older).action == "unchanged"
    with transaction(sessions) as session:
        status = session.get(CrlIssuerStatus, KEY)
        assert (status.issuer, status.last_success_at, status.error) == (LABEL, clock(), None)
        assert [r.number for r in crl_install.history(session, KEY)] == ["3", "5"]


def test_a_bad_upload_changes_nothing(sessions, clock):
    trust_ca(sessions, clock, CA)
    good = build_crl(number=1)
    upload(sessions, clock, good)
    refused(sessions, clock, build_crl(number=2, this_update=T0 - WEEK, next_update=T0 - HOUR),
            match="expired", via=upload)
    refused(sessions, clock, build_crl(number=2, key=ec.generate_private_key(ec.SECP256R1())),
            BadSignature, via=upload)
    assert current_der(sessions, "manual") == good


def test_a_fetched_crl_overrides_the_manual_one_only_once_newer(sessions, clock):
    trust_ca(sessions, clock, CA)
    manual = build_crl(number=10, this_update=T0 - HOUR)
    upload(sessions, clock, manual)

    def in_force() -> bytes:
        with transaction(sessions) as session:
            row = crl_install.effective(session, KEY)
            assert [r.id for r in crl_install.installed(session)] == [row.id]
            return crl_install.stored_der(session, row)

    assert in_force() == manual
    older = build_crl(number=1, this_update=T0 - 2 * HOUR)
    fetch(sessions, clock, older)
    assert in_force() == manual
    same_time = build_crl(number=2, this_update=T0 - HOUR)
    fetch(sessions, clock, same_time)
    assert in_force() == manual
    newer = build_crl(number=3, this_update=T0 - HOUR + dt.timedelta(seconds=1))
    fetch(sessions, clock, newer)
    assert in_force() == newer
    with transaction(sessions) as session:
        assert crl_install.effective(session, "0" * 64) is None


def test_removing_the_manual_crl_leaves_the_fetched_one_in_force(sessions, clock):
    trust_ca(sessions, clock, CA)
    fetched = build_crl(number=1, this_update=T0 - 2 * HOUR)
    fetch(sessions, clock, fetched)
    upload(sessions, clock, build_crl(number=2, this_update=T0 - HOUR, entries=[(5, [])]))
    clock.advance(minutes=5)
    with transaction(sessions) as session:
        row = crl_install.remove_manual(session, LABEL, clock())
        assert (row.origin, row.current, row.replaced_at) == ("manual", False, clock())
    with transaction(sessions) as session:
        assert crl_install.stored_der(session, crl_install.effective(session, KEY)) == fetched

    def remove_again(sessions, clock, _der):
        with transaction(sessions) as session:
            crl_install.remove_manual(session, LABEL, clock())
    message = refused(sessions, clock, b"", NotFound, via=remove_again)
    assert message == f"no manual CRL installed for '{LABEL}'"


# ---------------------------------------------------------------- status and lookup

def test_record_attempt_keeps_the_last_success_and_the_last_error(sessions, clock):
    with transaction(sessions) as session:
        crl_install.record_attempt(session, KEY, LABEL, clock(), error=None, source=URL)
    success = clock()
    clock.advance(hours=24)
    with transaction(sessions) as session:
        crl_install.record_attempt(session, KEY, "renamed", clock(), error="x" * 5000,
                                   source="other.crl")
    with transaction(sessions) as session:
        status = session.get(CrlIssuerStatus, KEY)
        assert (status.issuer, status.last_attempt_at, status.last_success_at, status.source) \
            == ("renamed", clock(), success, "other.crl")
        assert status.error == "x" * crl_install.MAX_ERROR
    clock.advance(hours=24)
    with transaction(sessions) as session:
        crl_install.record_attempt(session, KEY, LABEL, clock(), error=None, source=URL)
        status = session.get(CrlIssuerStatus, KEY)
        assert (status.error, status.last_success_at) == (None, clock())


def test_find_current_by_id_issuer_key_prefix_or_issuer_dn(sessions, clock, installed):
    with transaction(sessions) as session:
        row = crl_install.current(session, KEY, "fetched")
        for ref in (str(row.id), KEY[:8], KEY.upper(), f" {LABEL} "):
            assert crl_install.find_current(session, ref).id == row.id, ref
        with pytest.raises(NotFound) as caught:
            crl_install.find_current(session, LABEL, origin="manual")
        assert one_sentence(caught.value) == f"no manual CRL installed for '{LABEL}'"


@pytest.mark.parametrize("ref", ["", "a", "%", "_" * 8, "not-hex!"])
def test_find_current_refuses_what_is_not_an_id_key_prefix_or_dn(sessions, clock, installed,
                                                                  ref):
    """A one-digit prefix (or an empty one, or a LIKE wildcard) would pick an issuer at
    random: 'pkiq crl remove' must not guess."""
    with transaction(sessions) as session, pytest.raises(BadInput) as caught:
        crl_install.find_current(session, ref)
    assert "at least 8 hex digits" in one_sentence(caught.value)


def test_find_current_refuses_a_prefix_shared_by_two_issuers(sessions, clock):
    with transaction(sessions) as session:
        for suffix, origin in (("a", "fetched"), ("a", "manual"), ("b", "fetched")):
            session.add(InstalledCrl(
                issuer_key="abcdef01" + suffix * 56, issuer=f"/CN={suffix}", origin=origin,
                scope="complete", scope_key=COMPLETE_SCOPE.key, source=None, number="1",
                this_update=T0, next_update=T0 + WEEK, entries=0,
                sha256="0" * 64, current=True, installed_at=T0))
    with transaction(sessions) as session, pytest.raises(BadInput) as caught:
        crl_install.find_current(session, "abcdef01")
    assert one_sentence(caught.value) == "'abcdef01' matches CRLs of 2 issuers; be more specific"


# ---------------------------------------------------------------- CLI

def crl_file(tmp_path, der: bytes, name: str):
    path = tmp_path / name
    path.write_bytes(x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM))
    return path


def test_cli_crl_upload_show_remove(pkiq, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(CA.cert_pem)
    assert pkiq("trust", "add", ca_file).exit_code == 0
    der = build_crl(number=4, entries=[(1000, REASONS)])
    uploaded = pkiq("crl", "upload", crl_file(tmp_path, der, "issuing.crl"))
    assert uploaded.exit_code == 0, uploaded.stderr
    assert uploaded.stdout == f"installed manual CRL for {LABEL} (CRL 4)\n"
    again = pkiq("crl", "upload", crl_file(tmp_path, der, "copy.crl"), "--json")
    assert json.loads(again.stdout)["action"] == "unchanged"

    shown = pkiq("crl", "show", LABEL)
    assert shown.exit_code == 0, shown.stderr
    assert x509.load_pem_x509_crl(shown.stdout_bytes).public_bytes(DER) == der
    info = json.loads(pkiq("crl", "show", KEY[:12], "--json").stdout)
    assert (info["origin"], info["crl_number"], info["entries"]) == ("manual", "4", 1)

    removed = pkiq("crl", "remove", KEY[:8])
    assert removed.stdout == f"removed the manual CRL of {LABEL}\n"
    gone = pkiq("crl", "show", LABEL)
    assert (gone.exit_code, gone.stderr) == (5, f"pkiq: error: no CRL installed for '{LABEL}'\n")


def test_cli_crl_refusals_are_one_line_and_change_nothing(pkiq, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(CA.cert_pem)
    assert pkiq("trust", "add", ca_file).exit_code == 0
    good = build_crl(number=1)
    assert pkiq("crl", "upload", crl_file(tmp_path, good, "good.crl")).exit_code == 0
    cases = [
        (build_crl(number=2, next_update=T0 - dt.timedelta(minutes=1),
                   this_update=T0 - WEEK), 4, "(nextUpdate passed)"),
        (build_crl(number=2, key=ec.generate_private_key(ec.SECP256R1())), 3,
         "the signature does not verify"),
        (build_crl(number=2, extensions=[(x509.DeltaCRLIndicator(1), True)]), 4,
         "is a delta CRL"),
    ]
    for number, (der, code, fragment) in enumerate(cases):
        result = pkiq("crl", "upload", crl_file(tmp_path, der, f"bad{number}.crl"))
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("pkiq: error: ")
        assert fragment in result.stderr and "Traceback" not in result.stderr
        shown = pkiq("crl", "show", LABEL, "--der", "--out", tmp_path / "now.crl")
        assert shown.exit_code == 0 and (tmp_path / "now.crl").read_bytes() == good
    removed = pkiq("crl", "remove", "")
    assert (removed.exit_code, removed.stdout) == (3, "")
    assert "at least 8 hex digits" in removed.stderr


# ---------------------------------------------------------------- names, races, a rebuilt CA

def test_a_crl_issuer_matches_its_ca_whatever_the_string_type_and_case(sessions, clock):
    """RFC 5280 7.1: the CRL says UTF8String "example ltd", the certificate PrintableString
    "Example  Ltd"; still the same name."""
    printable = x509.Name([
        x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example  Ltd",
                           x509.name._ASN1Type.PrintableString),
        x509.NameAttribute(x509.NameOID.COMMON_NAME, "Names CA",
                           x509.name._ASN1Type.PrintableString)])
    ca = self_signed(printable)
    trust_ca(sessions, clock, ca)
    utf8 = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "example ltd"),
                      x509.NameAttribute(x509.NameOID.COMMON_NAME, "names ca")])
    assert utf8.public_bytes() != printable.public_bytes()
    der = (x509.CertificateRevocationListBuilder().issuer_name(utf8)
           .last_update(T0 - HOUR).next_update(T0 + WEEK)
           .add_extension(x509.CRLNumber(1), critical=False)
           .sign(ca.key, hashes.SHA256()).public_bytes(DER))
    assert fetch(sessions, clock, der).action == "installed"


def test_the_database_holds_one_current_crl_per_issuer_and_origin(sessions, clock, installed):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), transaction(sessions) as session:
        row = crl_install.current(session, KEY, "fetched")
        session.add(InstalledCrl(
            issuer_key=row.issuer_key, issuer=row.issuer, scope=row.scope,
            scope_key=row.scope_key, origin="fetched", source=URL,
            number="2", this_update=row.this_update, next_update=row.next_update, entries=0,
            sha256="0" * 64, current=True, installed_at=clock()))
        session.flush()


def test_forgetting_the_fetched_crl_lets_a_rebuilt_ca_restart_its_numbers(sessions, clock,
                                                                          installed):
    clock.advance(hours=1)
    fetch(sessions, clock, build_crl(number=40, this_update=T0))
    restarted = build_crl(number=1, this_update=T0 + HOUR)
    refused(sessions, clock, restarted, match="lower than the installed 40")
    with transaction(sessions) as session:
        crl_install.remove_current(session, LABEL, clock(), origin="fetched")
    assert fetch(sessions, clock, restarted).action == "installed"
    assert current_der(sessions) == restarted
