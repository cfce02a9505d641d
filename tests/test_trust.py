"""The trusted CA list (ca.trust): append a bundle, duplicates, the guide's warnings, delete,
reset to pkiq's CAs, and what the CRL checks and the stores read from it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID
from sqlalchemy import func, select

from ca import trust
from ca.errors import BadInput, NotFound, PkiqError
from ca.models import TrustedCa
from shell.db import transaction

from .conftest import T0
from .domain import new_ca

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


# ---------------------------------------------------------------- certificates

def make_cert(cn: str, *, org: str = "Example", parent=None, ca: bool = True,
              not_after: dt.datetime = T0 + dt.timedelta(days=3650), cdp: tuple = (),
              subject: x509.Name | None = None, key=None, extra=()):
    """A certificate and its key: self-signed unless ``parent`` (cert, key) signs it."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = subject or x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                    x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_cert, issuer_key = parent or (None, key)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(min(T0, not_after) - dt.timedelta(days=1))
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if cdp:
        builder = builder.add_extension(x509.CRLDistributionPoints([
            x509.DistributionPoint([x509.UniformResourceIdentifier(u) for u in point],
                                   None, None, None) for point in cdp]), critical=False)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical)
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(PEM) for c in certs)


def fp(cert: x509.Certificate) -> str:
    return trust.fingerprint(cert)


def one_sentence(exc: BaseException) -> str:
    """A message a PKI engineer reads at a prompt: a PkiqError, one line, one sentence."""
    assert isinstance(exc, PkiqError), repr(exc)
    message = str(exc)
    assert message and "\n" not in message and len(message) < 300, message
    assert not re.search(r"[.!?]\s+[A-Z]", message), f"more than one sentence: {message}"
    return message


def fingerprints(sessions) -> list[str]:
    with transaction(sessions) as session:
        return sorted(row.sha256 for row in session.scalars(select(TrustedCa)))


def add(sessions, clock, data: bytes) -> trust.AddResult:
    with transaction(sessions) as session:
        return trust.add(session, data, clock())


def refused(sessions, clock, action, exc_type=BadInput, match: str | None = None) -> str:
    """``action(session, now)`` raises a clear error and the list stays as it was."""
    before = fingerprints(sessions)
    with pytest.raises(exc_type, match=match) as caught, transaction(sessions) as session:
        action(session, clock())
    assert fingerprints(sessions) == before
    return one_sentence(caught.value)


# module-level so key generation happens once per session, not per test
ROOT, ROOT_KEY = make_cert("Trust Root")
SUB, _SUB_KEY = make_cert("Trust Issuing CA", parent=(ROOT, ROOT_KEY))
OTHER, _ = make_cert("Other Root", org="Other")


# ---------------------------------------------------------------- add

def test_add_appends_every_ca_of_a_bundle_and_ignores_the_text_around_them(sessions, clock):
    bundle = (b"Bag Attributes\n subject=/CN=Trust Root\n" + pem(ROOT) + b"\n# next\n"
              + pem(SUB) + b"trailing words\n")
    result = add(sessions, clock, bundle)
    assert [r.sha256 for r in result.added] == [fp(ROOT), fp(SUB)]
    assert result.duplicates == [] and result.warnings == []
    with transaction(sessions) as session:
        rows = trust.list_entries(session)
        assert [r.subject for r in rows] == ["/O=Example/CN=Trust Issuing CA",
                                             "/O=Example/CN=Trust Root"]
        sub = rows[0]
        assert sub.issuer == "/O=Example/CN=Trust Root"
        assert sub.origin == "uploaded" and sub.added_at == clock()
        assert sub.not_after == SUB.not_valid_after_utc
        assert sub.der == SUB.public_bytes(DER)
        assert sub.subject_key == trust.name_key(SUB.subject)


def test_adding_a_certificate_already_in_the_list_reports_it_as_a_duplicate(sessions, clock):
    add(sessions, clock, pem(ROOT))
    result = add(sessions, clock, pem(ROOT, OTHER, OTHER))
    assert [r.sha256 for r in result.added] == [fp(OTHER)]
    assert result.duplicates == [fp(ROOT), fp(OTHER)]  # the second copy in the bundle, too
    assert fingerprints(sessions) == sorted([fp(ROOT), fp(OTHER)])


def test_add_accepts_one_der_certificate(sessions, clock):
    result = add(sessions, clock, ROOT.public_bytes(DER))
    assert [r.sha256 for r in result.added] == [fp(ROOT)]


def test_add_accepts_x509_and_openssl_trusted_certificate_blocks(sessions, clock):
    """``openssl x509 -trustout`` writes TRUSTED CERTIFICATE: the certificate followed by
    its trust settings (X509_AUX, here 'serverAuth'); the certificate is what we keep."""
    aux = bytes.fromhex("300c300a06082b06010505070301")
    body = base64.encodebytes(ROOT.public_bytes(DER) + aux)
    trusted = b"-----BEGIN TRUSTED CERTIFICATE-----\n" + body + \
        b"-----END TRUSTED CERTIFICATE-----\n"
    x509_label = pem(OTHER).replace(b" CERTIFICATE-----", b" X509 CERTIFICATE-----")
    result = add(sessions, clock, trusted + x509_label)
    assert [r.sha256 for r in result.added] == [fp(ROOT), fp(OTHER)]
    with transaction(sessions) as session:
        assert trust.find(session, fp(ROOT)).der == ROOT.public_bytes(DER)


def test_add_refuses_a_bundle_with_an_end_entity_certificate_and_adds_nothing(sessions, clock):
    leaf, _ = make_cert("expe1.example.com", parent=(ROOT, ROOT_KEY), ca=False)
    message = refused(sessions, clock, lambda s, now: trust.add(s, pem(OTHER, leaf), now),
                      match="is not a CA certificate")
    assert "/O=Example/CN=expe1.example.com" in message and "nothing was added" in message


def _malformed_block() -> bytes:
    text = pem(OTHER).decode()
    return text.replace(text.splitlines()[3], "A" * 64).encode()


# a subjectKeyIdentifier that is a NULL, not an OCTET STRING: cryptography parses
# extensions only when they are first read, so loading the certificate alone succeeds
BROKEN, _ = make_cert("Broken CA", extra=[(x509.UnrecognizedExtension(
    ExtensionOID.SUBJECT_KEY_IDENTIFIER, b"\x05\x00"), False)])


@pytest.mark.parametrize("data, match", [
    (b"just some text\n", "no certificate found"),
    (b"\x30\x03\x02\x01\x01", "malformed DER"),
    (pem(ROOT) + b"\n" + _malformed_block(), "certificate #2 of the bundle is malformed"),
    (pem(BROKEN), "certificate #1 of the bundle is malformed"),
    (BROKEN.public_bytes(DER), "malformed DER"),
], ids=["no-certificate", "bad-der", "bad-second-block", "bad-extension", "bad-extension-der"])
def test_add_refuses_unreadable_input_and_adds_nothing(sessions, clock, data, match):
    add(sessions, clock, pem(SUB))
    refused(sessions, clock, lambda s, now: trust.add(s, data, now), match=match)


def test_add_refuses_a_bundle_over_the_limit(sessions, clock, monkeypatch):
    monkeypatch.setattr(trust, "MAX_BUNDLE_CERTS", 2)
    message = refused(sessions, clock,
                      lambda s, now: trust.add(s, pem(ROOT, SUB, OTHER), now))
    assert "holds more than 2 certificates; at most 2" in message


# ---------------------------------------------------------------- warnings

def test_two_cas_sharing_a_cn_are_warned_about(sessions, clock):
    twin, _ = make_cert("Trust Root", org="Another Org")
    result = add(sessions, clock, pem(ROOT, twin))
    assert len(result.added) == 2
    assert result.warnings == ["two trusted CAs share the CN 'Trust Root': certificates from "
                               "one may be checked against the other; give each CA a unique CN"]


def test_an_intermediate_without_its_issuer_is_warned_about_until_the_root_is_added(
        sessions, clock):
    result = add(sessions, clock, pem(SUB))
    assert result.warnings == ["/O=Example/CN=Trust Issuing CA is issued by "
                               "/O=Example/CN=Trust Root, which is not in the list: no full "
                               "chain of trust; add the issuing CA"]
    assert add(sessions, clock, pem(ROOT)).warnings == []


def test_an_expired_ca_is_added_with_a_warning(sessions, clock):
    old, _ = make_cert("Old Root", not_after=T0 - dt.timedelta(days=1))
    result = add(sessions, clock, pem(old))
    assert [r.sha256 for r in result.added] == [fp(old)]
    assert result.warnings == ["/O=Example/CN=Old Root expired on 2026-11-26 10:00Z: CRLs it "
                               "signs are refused (RFC 5280 6.3.3), so the CRLs installed for "
                               "it are no longer replaced and will lapse; add its renewed "
                               "certificate"]
    with transaction(sessions) as session:
        assert trust.list_warnings(session, clock()) == result.warnings


# ---------------------------------------------------------------- remove

def test_remove_by_list_id_and_by_fingerprint_prefix_with_colons(sessions, clock):
    result = add(sessions, clock, pem(ROOT, SUB, OTHER))
    root_id = result.added[0].id
    colons = ":".join(re.findall("..", fp(OTHER)[:12].upper()))
    with transaction(sessions) as session:
        removed, warnings = trust.remove(session, [str(root_id), colons], clock())
        assert [r.sha256 for r in removed] == [fp(ROOT), fp(OTHER)]
        # the intermediate's issuer is gone: the same warning as on add
        assert warnings == ["/O=Example/CN=Trust Issuing CA is issued by "
                            "/O=Example/CN=Trust Root, which is not in the list: no full "
                            "chain of trust; add the issuing CA"]
    assert fingerprints(sessions) == [fp(SUB)]


def test_removing_the_same_entry_twice_over_reports_it_once(sessions, clock):
    result = add(sessions, clock, pem(ROOT, OTHER))
    with transaction(sessions) as session:
        removed, _ = trust.remove(session, [str(result.added[0].id), fp(ROOT)], clock())
        assert [r.sha256 for r in removed] == [fp(ROOT)]
    assert fingerprints(sessions) == [fp(OTHER)]


def test_remove_with_one_unknown_reference_removes_nothing(sessions, clock):
    add(sessions, clock, pem(ROOT, OTHER))
    message = refused(sessions, clock,
                      lambda s, now: trust.remove(s, [fp(ROOT), "deadbeef00"], now),
                      NotFound)
    assert message == "no trusted CA deadbeef00 in the list"
    refused(sessions, clock, lambda s, now: trust.remove(s, [fp(OTHER), "999"], now), NotFound)


@pytest.mark.parametrize("ref", ["abc", "not-a-fingerprint", ""])
def test_remove_refuses_what_is_neither_an_id_nor_a_fingerprint(sessions, clock, ref):
    add(sessions, clock, pem(ROOT))
    message = refused(sessions, clock, lambda s, now: trust.remove(s, [ref], now))
    assert "give a list id or a SHA-256 fingerprint (at least 8 hex digits)" in message


# ---------------------------------------------------------------- reset

def test_reset_leaves_pkiq_cas_only(sessions, clock):
    root, _ = new_ca(sessions, clock, "Root")
    new_ca(sessions, clock, "Sub", parent="Root")
    add(sessions, clock, pem(ROOT, OTHER))
    with transaction(sessions) as session:
        rows = trust.reset(session, clock())
        assert [r.origin for r in rows] == ["default", "default"]
    with transaction(sessions) as session:
        entries = trust.list_entries(session)
        assert [e.subject for e in entries] == ["/C=GB/ST=England/O=Example/CN=Root CA",
                                                "/C=GB/ST=England/O=Example/CN=Sub CA"]
        assert entries[0].der == root.cert_der
        assert trust.list_warnings(session, clock()) == []
        # reset twice: the same list, no duplicates
        trust.reset(session, clock())
        assert session.scalar(select(func.count()).select_from(TrustedCa)) == 2


def test_reset_without_pkiq_cas_empties_the_list(sessions, clock):
    add(sessions, clock, pem(ROOT))
    with transaction(sessions) as session:
        assert trust.reset(session, clock()) == []
    assert fingerprints(sessions) == []


# ---------------------------------------------------------------- readers

def test_anchors_for_finds_trusted_and_pkiq_cas_of_that_name_once(sessions, clock):
    pkiq_ca, _ = new_ca(sessions, clock, "Root")
    pkiq_cert = x509.load_der_x509_certificate(pkiq_ca.cert_der)
    add(sessions, clock, pem(ROOT, SUB))
    with transaction(sessions) as session:
        assert trust.anchors_for(session, ROOT.subject) == [ROOT]
        assert trust.anchors_for(session, pkiq_cert.subject) == [pkiq_cert]
        assert trust.anchors_for(session, OTHER.subject) == []
        trust.reset(session, clock())  # the pkiq CA is now in the list too
        assert trust.anchors_for(session, pkiq_cert.subject) == [pkiq_cert]


def test_anchors_for_returns_every_key_of_a_ca_rekeyed_under_the_same_name(sessions, clock):
    rekeyed, _ = make_cert("", subject=ROOT.subject)
    add(sessions, clock, pem(ROOT, rekeyed))
    with transaction(sessions) as session:
        anchors = trust.anchors_for(session, ROOT.subject)
    assert sorted(fp(c) for c in anchors) == sorted([fp(ROOT), fp(rekeyed)])


def test_cdp_urls_are_the_http_and_https_points_of_the_trusted_cas_once_each(sessions, clock):
    a, _ = make_cert("CDP A", cdp=[("http://pki.example.com/a.crl",
                                    "ldap:///CN=A,O=Example?certificateRevocationList")],
                     key=ROOT_KEY)
    b, _ = make_cert("CDP B", cdp=[("HTTPS://pki.example.com/b.crl",),
                                   ("http://pki.example.com/a.crl",)], key=ROOT_KEY)
    add(sessions, clock, pem(a, b, OTHER))
    with transaction(sessions) as session:
        assert trust.cdp_urls(session) == ["http://pki.example.com/a.crl",
                                           "HTTPS://pki.example.com/b.crl"]


def test_trusted_pem_is_the_whole_list_as_one_bundle(sessions, clock):
    with transaction(sessions) as session:
        assert trust.trusted_pem(session) == b""
    add(sessions, clock, pem(OTHER, ROOT))
    with transaction(sessions) as session:
        bundle = trust.trusted_pem(session)
    assert x509.load_pem_x509_certificates(bundle) == [ROOT, OTHER]  # by subject
    assert bundle == pem(ROOT, OTHER)


# ---------------------------------------------------------------- CLI

def test_cli_trust_add_list_show_remove_reset(pkiq, tmp_path):
    sub_file, bundle = tmp_path / "sub.pem", tmp_path / "bundle.pem"
    sub_file.write_bytes(pem(SUB))
    bundle.write_bytes(pem(ROOT, SUB))
    first = pkiq("trust", "add", sub_file)
    assert first.exit_code == 0, first.stderr
    assert first.stderr == ("pkiq: warning: /O=Example/CN=Trust Issuing CA is issued by "
                            "/O=Example/CN=Trust Root, which is not in the list: no full chain "
                            "of trust; add the issuing CA\n")
    second = pkiq("trust", "add", bundle, "--json")
    assert second.exit_code == 0 and second.stderr == ""
    info = json.loads(second.stdout)
    assert [a["sha256"] for a in info["added"]] == [fp(ROOT)]
    assert (info["duplicates"], info["warnings"]) == ([fp(SUB)], [])

    listing = pkiq("trust", "list")
    assert listing.exit_code == 0 and listing.stderr == ""
    lines = listing.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [fp(SUB)[:16], fp(ROOT)[:16]]
    assert lines[1].endswith("uploaded  /O=Example/CN=Trust Root")
    root_id = lines[1].split()[0]

    assert pkiq("trust", "show", root_id, "--pem").stdout == pem(ROOT).decode()
    decoded = pkiq("trust", "show", fp(ROOT)[:10]).stdout
    assert "CN=Trust Root" in decoded and "CA:TRUE" in decoded

    removed = pkiq("trust", "remove", root_id)
    assert removed.stdout == "removed /O=Example/CN=Trust Root\n"
    assert "which is not in the list" in removed.stderr
    reset = pkiq("trust", "reset")
    assert reset.stdout == "the trusted CA list now holds pkiq's 0 CA(s)\n"
    assert pkiq("trust", "list").stdout == "the trusted CA list is empty\n"


def test_cli_trust_errors_are_one_line_and_change_nothing(pkiq, tmp_path):
    leaf, _ = make_cert("expe1.example.com", parent=(ROOT, ROOT_KEY), ca=False)
    good, bad = tmp_path / "root.pem", tmp_path / "leaf.pem"
    good.write_bytes(pem(ROOT))
    bad.write_bytes(pem(OTHER, leaf))
    assert pkiq("trust", "add", good).exit_code == 0
    before = pkiq("trust", "list", "--json").stdout
    for args, code, fragment in (
            (("trust", "add", bad), 3, "is not a CA certificate"),
            (("trust", "remove", fp(ROOT), "deadbeef00"), 5, "no trusted CA deadbeef00"),
            (("trust", "show", "xyz"), 3, "give a list id or a SHA-256 fingerprint")):
        result = pkiq(*args)
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("pkiq: error: ")
        assert fragment in result.stderr and "Traceback" not in result.stderr
        assert pkiq("trust", "list", "--json").stdout == before
