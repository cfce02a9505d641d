"""CRLs kept per issuer and scope (issuingDistributionPoint), and the acceptance details of
issue 10: a partition never replaces the complete CRL, a Microsoft CA's same-IDP CRLs are
one scope, an unnumbered CRL never replaces a numbered one, an older upload needs --force
(recorded), a CRL from an expired trusted CA is refused, and ``crl show``/``crl remove``
find an issuer by RFC 5280 name comparison. Each class is tried with several members."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.exc import IntegrityError

from ca import crl_config, crl_install, trust
from ca.crl_install import CrlRejected
from ca.crl_scope import COMPLETE, COMPLETE_SCOPE, idp_text, scope_of, scope_of_text
from ca.errors import BadSignature
from ca.models import InstalledCrl, UTCDateTime
from scheduler import refresh, upkeep
from shell.db import alembic_config, make_engine, session_factory, transaction

from . import httpd
from .conftest import T0
from .crlfactory import Issuer
from .test_crl_install import (
    CA,
    HOUR,
    KEY,
    LABEL,
    SKEW,
    WEEK,
    build_crl,
    check,
    crl_file,
    current_der,
    fetch,
    refused,
    snapshot,
    trust_ca,
    upload,
)

http_server = httpd.http_server
PART2 = "http://partner/part2.crl"
MS_LDAP = ("ldap:///CN=Issuing CA,CN=pki01,CN=CDP,CN=Public Key Services,CN=Services,"
           "CN=Configuration,DC=example,DC=com?certificateRevocationList?base?"
           "objectClass=cRLDistributionPoint")
MS_HTTP = "http://pki.example.com/CertEnroll/Issuing%20CA.crl"
REVOKED_ON_COMPLETE = 1000


def idp(*uris: str, relative=None, user=False, ca=False, reasons=None, attribute=False,
        indirect=False) -> x509.IssuingDistributionPoint:
    return x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(u) for u in uris] or None,
        relative_name=relative, only_contains_user_certs=user, only_contains_ca_certs=ca,
        only_some_reasons=frozenset(reasons) if reasons else None, indirect_crl=indirect,
        only_contains_attribute_certs=attribute)


def scoped_crl(point: x509.IssuingDistributionPoint | None, *, number: int | None = 1,
               serials=(), ca: Issuer = CA, **kw) -> bytes:
    extensions = [(point, True)] if point is not None else []
    return build_crl(ca, number=number, extensions=extensions,
                     entries=[(s, []) for s in serials], **kw)


def revoked_anywhere(sessions, serial: int, key: str = KEY) -> bool:
    """Whether any CRL in force for the issuer lists ``serial`` (what a relying party that
    loads them all would find)."""
    with transaction(sessions) as session:
        return any(x509.load_der_x509_crl(crl_install.stored_der(session, r))
                   .get_revoked_certificate_by_serial_number(serial) is not None
                   for r in crl_install.installed(session) if r.issuer_key == key)


def revoked_in_force(sessions, serial: int, key: str = KEY) -> list[str]:
    """The scopes whose CRL in force lists ``serial``."""
    with transaction(sessions) as session:
        rows = [r for r in crl_install.installed(session) if r.issuer_key == key]
        return [r.scope for r in rows
                if x509.load_der_x509_crl(crl_install.stored_der(session, r))
                .get_revoked_certificate_by_serial_number(serial) is not None]


def scopes_in_force(sessions, key: str = KEY) -> dict[str, str]:
    with transaction(sessions) as session:
        return {r.scope: r.number for r in crl_install.installed(session)
                if r.issuer_key == key}


@pytest.fixture
def complete10(sessions, clock) -> bytes:
    """The issuer's complete CRL #10, revoking serial 1000."""
    trust_ca(sessions, clock, CA)
    der = scoped_crl(None, number=10, serials=[REVOKED_ON_COMPLETE])
    assert fetch(sessions, clock, der).action == "installed"
    return der


# ---------------------------------------------------------------- how a scope is named

RDN = x509.RelativeDistinguishedName([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Part 2")])


@pytest.mark.parametrize("point, text", [
    (idp(PART2), f"URI:{PART2}"),
    (idp(MS_LDAP, MS_HTTP), f"URI:{MS_HTTP} | URI:{MS_LDAP}"),
    (idp(relative=RDN), "relativeName:CN=Part 2"),
    (idp(user=True), "onlyContainsUserCerts"),
    (idp(ca=True), "onlyContainsCACerts"),
    (idp(reasons={x509.ReasonFlags.key_compromise, x509.ReasonFlags.ca_compromise}),
     "onlySomeReasons:cACompromise,keyCompromise"),
    (idp(PART2, user=True), f"URI:{PART2} | onlyContainsUserCerts"),
    (idp("http://x/a\tb|c.crl"), "URI:http://x/a\\x09b\\x7Cc.crl"),
    (x509.IssuingDistributionPoint(
        [x509.DirectoryName(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME,
                                                          "Soci\u00e9t\u00e9")]))],
        None, False, False, None, False, False), "dirName:CN=Soci\\xC3\\xA9t\\xC3\\xA9"),
], ids=["uri", "microsoft-two-uris", "relative-name", "user-certs", "ca-certs", "reasons",
        "uri-and-user-certs", "control-and-bar-escaped", "non-ascii-escaped"])
def test_a_scope_is_the_canonical_text_of_the_idp(point, text):
    assert idp_text(point) == text


def test_the_same_idp_is_the_same_scope_whatever_the_order_of_its_names():
    one = scope_of(x509.load_der_x509_crl(scoped_crl(idp(MS_LDAP, MS_HTTP))))
    other = scope_of(x509.load_der_x509_crl(scoped_crl(idp(MS_HTTP, MS_LDAP), number=2)))
    assert one == other and not one.complete
    assert scope_of(x509.load_der_x509_crl(scoped_crl(None))) == COMPLETE_SCOPE
    assert len({scope_of(x509.load_der_x509_crl(scoped_crl(p))).key for p in (
        idp(PART2), idp(PART2, user=True), idp(PART2, ca=True), idp(user=True))}) == 4


# ---------------------------------------------------------------- a partition is a scope

PARTITIONS = {
    "by-uri": idp(PART2),
    "by-two-uris": idp(PART2, "ldap://partner/cn=part2"),
    "by-relative-name": idp(relative=RDN),
    "user-certs-only": idp(user=True),
    "ca-certs-only": idp(ca=True),
    "some-reasons": idp(reasons={x509.ReasonFlags.key_compromise}),
    "uri-and-user-certs": idp(PART2, user=True),
}


@pytest.mark.parametrize("point", PARTITIONS.values(), ids=PARTITIONS.keys())
def test_a_partitioned_crl_does_not_replace_the_complete_one(sessions, clock, complete10,
                                                             point):
    """Issue 10: CRL #11 whose IDP names one partition was installed over the complete
    CRL #10, and serial 1000 revoked on #10 was no longer revoked anywhere."""
    part = scoped_crl(point, number=11, serials=[2000])
    outcome = fetch(sessions, clock, part)
    assert revoked_anywhere(sessions, REVOKED_ON_COMPLETE), "#10's revocation was lost"
    assert revoked_anywhere(sessions, 2000)
    assert current_der(sessions) == complete10
    assert (outcome.action, outcome.row.scope) == ("installed", idp_text(point))
    assert revoked_in_force(sessions, REVOKED_ON_COMPLETE) == [COMPLETE]
    assert revoked_in_force(sessions, 2000) == [idp_text(point)]
    assert scopes_in_force(sessions) == {COMPLETE: "10", idp_text(point): "11"}


def test_crl_numbers_and_freshness_are_compared_within_a_scope_only(sessions, clock,
                                                                     complete10):
    """RFC 5280 5.2.3: numbers rise per issuer and scope. A partition at #50 of thisUpdate
    T0 neither blocks complete #11 of an earlier thisUpdate nor lets a partition replay at
    #49, or a #51 older than its own scope's, through."""
    fetch(sessions, clock, scoped_crl(idp(PART2), number=50, this_update=T0))
    complete11 = scoped_crl(None, number=11, this_update=T0 - HOUR + SKEW)
    assert fetch(sessions, clock, complete11).action == "installed"
    message = refused(sessions, clock, scoped_crl(idp(PART2), number=49))
    assert message == (f"CRL from {LABEL} (scope URI:{PART2}): CRL number 49 is lower than "
                       "the installed 50 (a stale copy, or a replay); the installed CRL is kept")
    message = refused(sessions, clock, scoped_crl(idp(PART2), number=51,
                                                  this_update=T0 - HOUR + 2 * SKEW))
    assert "(scope URI:http://partner/part2.crl): thisUpdate 2026-11-27 09:10:00Z is older " \
        "than the installed CRL's 2026-11-27 10:00:00Z" in message
    assert scopes_in_force(sessions) == {COMPLETE: "11", f"URI:{PART2}": "50"}
    assert revoked_in_force(sessions, REVOKED_ON_COMPLETE) == []  # #11 no longer lists it


def test_a_microsoft_ca_with_the_same_idp_in_every_crl_is_one_scope(sessions, clock):
    trust_ca(sessions, clock, CA)
    point = idp(MS_LDAP, MS_HTTP)
    for number in (1, 2, 3):
        clock.advance(minutes=10)
        crl = scoped_crl(point, number=number, serials=range(100, 100 + number),
                         this_update=clock() - HOUR)
        assert fetch(sessions, clock, crl).action == "installed"
    assert scopes_in_force(sessions) == {idp_text(point): "3"}
    refused(sessions, clock, scoped_crl(point, number=2), match="lower than the installed 3")
    with transaction(sessions) as session:
        rows = crl_install.history(session, KEY)
        assert [(r.number, r.current) for r in rows] == [("3", True), ("2", False),
                                                          ("1", False)]
        assert {r.scope for r in rows} == {idp_text(point)}
        assert crl_install.find_current(session, LABEL).number == "3"


@pytest.mark.parametrize("extensions, match", [
    ([(x509.DeltaCRLIndicator(10), True), (idp(PART2), True)], "is a delta CRL"),
    ([(idp(PART2, indirect=True), True)], "is an indirect CRL"),
    ([(idp(indirect=True, user=True), True)], "is an indirect CRL"),
    ([(idp(attribute=True), True)], "lists attribute certificates only"),
    ([(idp(PART2, attribute=True), True)], "RFC 5280 5.2.5 forbids"),
], ids=["delta-of-a-partition", "indirect-partition", "indirect-user-certs",
        "attribute-certs", "attribute-certs-of-a-point"])
def test_what_cannot_be_a_scope_is_still_refused_with_the_reason(sessions, clock,
                                                                 complete10, extensions,
                                                                 match):
    message = refused(sessions, clock, build_crl(number=11, extensions=extensions),
                      match=match)
    assert message.startswith(f"CRL from {LABEL} ")
    assert scopes_in_force(sessions) == {COMPLETE: "10"}


def test_an_empty_idp_is_refused_as_malformed(sessions, clock, complete10):
    """RFC 5280 5.2.5: the IDP must not be an empty SEQUENCE."""
    empty = build_crl(number=11, extensions=[(x509.UnrecognizedExtension(
        x509.oid.ExtensionOID.ISSUING_DISTRIBUTION_POINT, b"\x30\x00"), True)])
    before = snapshot(sessions)
    with pytest.raises(CrlRejected, match="malformed extension"):  # its wording: item 4's
        fetch(sessions, clock, empty)
    assert snapshot(sessions) == before


def test_a_refresh_keeps_both_scopes_and_says_which(sessions, clock, http_server):
    """The issue's case end to end: the complete CRL and a partition served by two points."""
    clock.now = T0
    with transaction(sessions) as session:
        trust.add(session, CA.cert_pem, clock())
        crl_config.update_settings(session, clock(), timeout_seconds=2)
        crl_config.add_points(session, [http_server.url("/full.crl"),
                                        http_server.url("/part2.crl")], clock())
    http_server.route("/full.crl", scoped_crl(None, number=10, serials=[REVOKED_ON_COMPLETE]))
    http_server.route("/part2.crl", scoped_crl(idp(PART2), number=11, serials=[2000]))
    report = refresh.refresh(sessions, clock, sleep=lambda _s: None)
    assert not report.failed
    assert revoked_anywhere(sessions, REVOKED_ON_COMPLETE), "#10's revocation was lost"
    entries = {c["scope"]: (c["action"], c["number"]) for p in report.points for c in p.crls}
    assert entries == {COMPLETE: ("installed", 10), f"URI:{PART2}": ("installed", 11)}
    assert revoked_in_force(sessions, REVOKED_ON_COMPLETE) == [COMPLETE]
    assert revoked_in_force(sessions, 2000) == [f"URI:{PART2}"]


# ---------------------------------------------------------------- unnumbered after numbered

@pytest.mark.parametrize("point", [None, idp(PART2), idp(MS_LDAP, MS_HTTP)],
                         ids=["complete", "partition", "microsoft"])
def test_a_crl_without_a_number_never_replaces_a_numbered_one_fetched(sessions, clock, point):
    trust_ca(sessions, clock, CA)
    numbered = scoped_crl(point, number=10, serials=[REVOKED_ON_COMPLETE])
    fetch(sessions, clock, numbered)
    unnumbered = scoped_crl(point, number=None, this_update=T0)  # newer, still refused
    message = refused(sessions, clock, unnumbered, match="has no CRL number")
    assert "installed CRL has number 10, so it cannot be shown to be newer" in message
    assert revoked_in_force(sessions, REVOKED_ON_COMPLETE) == [idp_text(point) if point
                                                                else COMPLETE]


def test_a_crl_without_a_number_never_replaces_a_numbered_one_uploaded(sessions, clock):
    trust_ca(sessions, clock, CA)
    upload(sessions, clock, scoped_crl(None, number=10))
    refused(sessions, clock, scoped_crl(None, number=None, this_update=T0),
            match="has no CRL number .* the installed manual CRL is kept \\(upload with "
                  "--force",
            via=upload)
    fetch(sessions, clock, scoped_crl(idp(PART2), number=3))
    refused(sessions, clock, scoped_crl(idp(PART2), number=None, this_update=T0),
            match="installed CRL has number 3, .* the installed fetched CRL is kept",
            via=upload)


def test_a_numbered_crl_may_follow_an_unnumbered_one(sessions, clock):
    trust_ca(sessions, clock, CA)
    fetch(sessions, clock, scoped_crl(None, number=None, this_update=T0 - 2 * HOUR))
    assert fetch(sessions, clock, scoped_crl(None, number=1)).action == "installed"


# ---------------------------------------------------------------- older uploads and --force

def _cli_upload(pkiq, tmp_path, der, name, *args):
    return pkiq("crl", "upload", crl_file(tmp_path, der, name), *args)


@pytest.mark.parametrize("installed_by", ["upload", "fetch"])
@pytest.mark.parametrize("older, reason", [
    (dict(number=9), "CRL number 9 is lower than the installed 10"),
    (dict(number=10, serials=[1, 2]), "CRL number 10 is the installed one's, but the content"),
    (dict(number=11), "thisUpdate 2026-11-27 07:00:00Z is older"),
    (dict(number=None), "has no CRL number"),
], ids=["lower-number", "same-number-other-content", "older-this-update", "no-number"])
def test_an_older_upload_is_refused_unless_forced_and_the_force_is_recorded(
        pkiq, sessions, clock, tmp_path, installed_by, older, reason):
    """Issue 10: a manual upload of #9 after #10 rolled back without a word."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(CA.cert_pem)
    assert pkiq("trust", "add", ca_file).exit_code == 0
    newest = scoped_crl(None, number=10, this_update=T0 - 2 * HOUR)
    if installed_by == "upload":
        assert _cli_upload(pkiq, tmp_path, newest, "ten.crl").exit_code == 0
    else:
        fetch(sessions, clock, newest)
    der = scoped_crl(None, this_update=T0 - 3 * HOUR, **older)
    before = snapshot(sessions)
    result = _cli_upload(pkiq, tmp_path, der, "older.crl")
    assert result.exit_code == 4, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and reason in result.stderr
    origin = "manual" if installed_by == "upload" else "fetched"
    assert f"the installed {origin} CRL is kept (upload with --force" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(sessions) == before

    forced = _cli_upload(pkiq, tmp_path, der, "older.crl", "--force", "--json")
    assert forced.exit_code == 0, forced.stderr
    info = json.loads(forced.stdout)
    assert info["action"] == "installed" and reason in info["note"]
    assert info["note"].startswith(f"uploaded with --force over {origin} CRL 10: ")
    assert info["in_force"] is (installed_by == "upload")  # a newer fetched CRL still rules
    history = json.loads(pkiq("crl", "history", LABEL, "--json").stdout)
    assert history[0]["note"] == info["note"] and history[0]["origin"] == "manual"
    text = pkiq("crl", "history", LABEL).stdout
    assert "uploaded with --force" in text.splitlines()[0]
    if installed_by == "upload":
        shown = json.loads(pkiq("crl", "show", LABEL, "--json").stdout)
        assert shown["note"] == info["note"]
        assert "(uploaded with --force" in pkiq("crl", "status").stdout


def test_a_newer_upload_needs_no_force(pkiq, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(CA.cert_pem)
    assert pkiq("trust", "add", ca_file).exit_code == 0
    assert _cli_upload(pkiq, tmp_path, scoped_crl(None, number=9), "nine.crl").exit_code == 0
    newer = _cli_upload(pkiq, tmp_path, scoped_crl(None, number=10), "ten.crl", "--json")
    assert json.loads(newer.stdout)["note"] is None


# ---------------------------------------------------------------- an expired trusted CA

def ca_cert(name: str, *, not_after: dt.datetime, key=None) -> Issuer:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example"),
                         x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(T0 - 400 * WEEK).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return Issuer(key, cert)


@pytest.mark.parametrize("not_after", [T0, T0 - dt.timedelta(seconds=1), T0 - 52 * WEEK],
                         ids=["expires-now", "a-second-ago", "a-year-ago"])
@pytest.mark.parametrize("via", [fetch, upload], ids=["fetched", "uploaded"])
def test_a_crl_from_a_trusted_ca_whose_certificate_expired_is_refused(sessions, clock,
                                                                        not_after, via):
    old = ca_cert("Expired CA", not_after=not_after)
    trust_ca(sessions, clock, old)
    message = refused(sessions, clock, build_crl(old), via=via)
    assert message == ("CRL from /O=Example/CN=Expired CA is signed by a CA certificate that "
                       f"expired on {not_after:%Y-%m-%d %H:%M}Z, and RFC 5280 6.3.3 takes "
                       "CRLs only from an issuer valid now; add the CA's renewed certificate "
                       "with 'pkiq trust add'")
    with transaction(sessions) as session:
        warning, = trust.list_warnings(session, clock())
    assert warning.startswith(f"/O=Example/CN=Expired CA expired on {not_after:%Y-%m-%d}")
    assert "CRLs it signs are refused" in warning


def test_a_ca_renewed_with_the_same_key_is_used_through_its_valid_certificate(sessions,
                                                                               clock):
    old = ca_cert("Renewed CA", not_after=T0 - WEEK)
    renewed = ca_cert("Renewed CA", not_after=T0 + 52 * WEEK, key=old.key)
    trust_ca(sessions, clock, old)
    refused(sessions, clock, build_crl(old), match="expired on")
    trust_ca(sessions, clock, renewed)
    assert fetch(sessions, clock, build_crl(old)).action == "installed"


def test_a_bad_signature_is_still_named_before_the_expiry(sessions, clock):
    old = ca_cert("Forged Expired CA", not_after=T0 - WEEK)
    trust_ca(sessions, clock, old)
    forged = build_crl(old, key=ec.generate_private_key(ec.SECP256R1()))
    refused(sessions, clock, forged, BadSignature, match="does not verify")


# ---------------------------------------------------------------- finding an issuer by name

PRINTABLE = x509.name._ASN1Type.PrintableString
CERT_NAME = x509.Name([
    x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "GB", PRINTABLE),
    x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example  Ltd", PRINTABLE),
    x509.NameAttribute(x509.NameOID.COMMON_NAME, "Soci\u00e9t\u00e9 Names CA")])
CRL_NAME = x509.Name([  # what the CRL says: other case, spacing and string type
    x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "gb"),
    x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "EXAMPLE LTD"),
    x509.NameAttribute(x509.NameOID.COMMON_NAME, "SOCI\u00c9T\u00c9   names ca")])


@pytest.fixture
def names_ca(pkiq, tmp_path) -> str:
    """A trusted CA, and its CRL spelling the issuer otherwise; returns the row's label."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(CERT_NAME).issuer_name(CERT_NAME)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(T0 - WEEK).not_valid_after(T0 + 52 * WEEK)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert pkiq("trust", "add", tmp_path / "ca.pem").exit_code == 0
    der = (x509.CertificateRevocationListBuilder().issuer_name(CRL_NAME)
           .last_update(T0 - HOUR).next_update(T0 + WEEK)
           .add_extension(x509.CRLNumber(1), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    uploaded = pkiq("crl", "upload", crl_file(tmp_path, der, "names.crl"), "--json")
    assert uploaded.exit_code == 0, uploaded.stderr
    return json.loads(uploaded.stdout)["issuer"]


SPELLINGS = [
    "/C=GB/O=Example  Ltd/CN=Soci\u00e9t\u00e9 Names CA",  # the certificate's own
    "/C=GB/O=Example Ltd/CN=Soci\\xC3\\xA9t\\xC3\\xA9 Names CA",  # as crl status prints
    "/c=gb/o=example ltd/cn=soci\u00e9t\u00e9 names ca",
    "  /C=GB/O= Example   Ltd /CN=SOCI\u00c9T\u00c9 NAMES CA  ",
    "CN=Soci\u00e9t\u00e9 Names CA,O=Example Ltd,C=GB",  # RFC 4514, most specific first
    "cn=soci\u00e9t\u00e9  names ca, o=EXAMPLE LTD, c=gb",
    "/countryName=GB/organizationName=Example Ltd/commonName=Soci\u00e9t\u00e9 Names CA",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_crl_show_finds_the_issuer_by_rfc5280_name_comparison(pkiq, names_ca, spelling):
    """Issue 10: `crl show "<name>"` failed (exit 5) after a CRL arrived with the issuer
    name in another case or spacing, which installation itself had matched."""
    assert names_ca == "/C=gb/O=EXAMPLE LTD/CN=SOCI\\xC3\\x89T\\xC3\\x89   names ca"
    shown = pkiq("crl", "show", spelling, "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["issuer"] == names_ca


@pytest.mark.parametrize("spelling", SPELLINGS[::2])
def test_crl_remove_finds_the_issuer_by_rfc5280_name_comparison(pkiq, names_ca, spelling):
    removed = pkiq("crl", "remove", spelling)
    assert removed.exit_code == 0, removed.stderr
    assert removed.stdout == f"removed the manual CRL of {names_ca}\n"
    assert pkiq("crl", "show", spelling).exit_code == 5


@pytest.mark.parametrize("spelling, code, fragment", [
    ("/C=GB/O=Example Ltd/CN=Another CA", 5, "CRL installed for"),
    ("/C=GB/O=Example Ltd", 5, "CRL installed for"),
    ("/CN=Soci\u00e9t\u00e9 Names CA/O=Example Ltd/C=GB", 5, "CRL installed for"),
    ("CN=a,,=b", 3, "as a distinguished name"),
    ("/nonsense/CN=x", 3, "as a distinguished name"),
], ids=["other-cn", "fewer-rdns", "reversed-oneline", "bad-rfc4514", "bad-oneline"])
def test_other_names_are_not_found_and_bad_ones_are_one_clear_error(pkiq, names_ca,
                                                                    spelling, code, fragment):
    for command_args in (("crl", "show", spelling), ("crl", "remove", spelling)):
        result = pkiq(*command_args)
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and fragment in result.stderr
    assert pkiq("crl", "show", SPELLINGS[0]).exit_code == 0


def test_a_slash_inside_a_value_is_read_as_openssl_writes_it(sessions, clock):
    ca = ca_cert("AC/DC Root", not_after=T0 + 52 * WEEK)
    trust_ca(sessions, clock, ca)
    fetch(sessions, clock, build_crl(ca))
    with transaction(sessions) as session:
        for ref in ("/O=Example/CN=AC/DC Root", "/o=example/cn=ac/dc  root",
                    "CN=AC/DC Root,O=Example"):
            assert crl_install.find_current(session, ref).issuer == "/O=Example/CN=AC/DC Root"


# ---------------------------------------------------------------- show, remove, status

@pytest.fixture
def two_scopes(pkiq, sessions, clock, tmp_path, complete10) -> tuple[bytes, bytes]:
    part = scoped_crl(idp(PART2), number=11, serials=[2000])
    fetch(sessions, clock, part)
    return complete10, part


def test_crl_show_gives_every_scope_complete_first_or_the_one_asked(pkiq, tmp_path,
                                                                    two_scopes):
    complete, part = two_scopes
    both = pkiq("crl", "show", LABEL)
    assert both.exit_code == 0, both.stderr
    assert both.stdout.count("-----BEGIN X509 CRL-----") == 2
    first = x509.load_pem_x509_crl(both.stdout_bytes)  # pyca reads the first block
    assert first.public_bytes(serialization.Encoding.DER) == complete
    info = json.loads(pkiq("crl", "show", LABEL, "--json").stdout)
    assert [(c["scope"], c["crl_number"]) for c in info["crls"]] == [
        (COMPLETE, "10"), (f"URI:{PART2}", "11")]
    one = pkiq("crl", "show", KEY[:10], "--scope", f"URI:{PART2}", "--der", "--out",
               tmp_path / "part2.crl")
    assert one.exit_code == 0 and (tmp_path / "part2.crl").read_bytes() == part
    out = tmp_path / "all.pem"
    assert pkiq("crl", "show", LABEL, "--out", out).exit_code == 0
    assert out.read_text().count("BEGIN X509 CRL") == 2


@pytest.mark.parametrize("args, code, fragment", [
    (("--der", "--out", "x.crl"), 3, "has CRLs of 2 scopes and DER holds one CRL"),
    (("--scope", "URI:http://partner/part3.crl"), 5,
     f"its scopes: complete, URI:{PART2}"),
    (("--scope", ""), 5, "no CRL of scope ''"),
], ids=["der-of-two", "unknown-scope", "empty-scope"])
def test_crl_show_refusals_about_scopes(pkiq, tmp_path, two_scopes, args, code, fragment):
    args = tuple(str(tmp_path / a) if a.endswith(".crl") else a for a in args)
    result = pkiq("crl", "show", LABEL, *args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert fragment in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.crl").exists()


def test_crl_remove_of_an_issuer_with_several_scopes_needs_the_scope(pkiq, sessions,
                                                                     two_scopes):
    before = snapshot(sessions)
    ambiguous = pkiq("crl", "remove", LABEL, "--fetched")
    assert ambiguous.exit_code == 3
    assert ambiguous.stderr == (f"pkiq: error: {LABEL} has CRLs of 2 scopes (complete, "
                                f"URI:{PART2}); name one with --scope, or give the CRL id\n")
    assert snapshot(sessions) == before
    removed = pkiq("crl", "remove", LABEL, "--fetched", "--scope", f"URI:{PART2}")
    assert removed.stdout == f"removed the fetched CRL of {LABEL}, scope URI:{PART2}\n"
    assert scopes_in_force(sessions) == {COMPLETE: "10"}
    with transaction(sessions) as session:
        complete_id = crl_install.current(session, KEY, "fetched").id
    assert pkiq("crl", "remove", str(complete_id), "--fetched").exit_code == 0
    assert scopes_in_force(sessions) == {}


def test_crl_status_shows_one_line_per_scope_and_explains_scopes(pkiq, two_scopes):
    info = json.loads(pkiq("crl", "status", "--json").stdout)
    rows = [(i["issuer"], i["scope"], i["crl_number"]) for i in info["issuers"]]
    assert rows == [(LABEL, COMPLETE, "10"), (LABEL, f"URI:{PART2}", "11")]
    text = pkiq("crl", "status").stdout
    block = text[text.index(f"  {LABEL}\n"):]
    assert block.splitlines()[1].startswith("    scope complete: fetched CRL 10")
    assert block.splitlines()[2].startswith(f"    scope URI:{PART2}: fetched CRL 11")
    assert "every scope of an issuer must stay current" in text


def test_a_single_complete_scope_looks_as_before(pkiq, sessions, clock, complete10):
    text = pkiq("crl", "status").stdout
    assert f"  {LABEL}\n    fetched CRL 10," in text and "scope" not in text


# ---------------------------------------------------------------- alerts judge every scope

def test_one_stale_scope_is_one_alert_naming_the_scope(sessions, clock, complete10):
    fetch(sessions, clock, scoped_crl(idp(PART2), number=11, next_update=T0 + 2 * HOUR))
    fetch(sessions, clock, scoped_crl(idp(MS_HTTP), number=3, next_update=T0 + 30 * HOUR))
    warn = dt.timedelta(hours=24)
    with transaction(sessions) as session:
        found = {p.key: p for p in upkeep.problems(session, clock(), warn)}
    assert set(found) == {f"expiry:{KEY}:{scope_of_text(f'URI:{PART2}').key[:16]}"}
    problem, = found.values()
    assert problem.severity == "warning"
    assert problem.summary.startswith(f"the CRL for {LABEL} (scope URI:{PART2}) reaches "
                                      "nextUpdate at 2026-11-27 12:00Z")
    assert problem.details["scope"] == f"URI:{PART2}"
    clock.advance(hours=3)
    with transaction(sessions) as session:
        found = {p.key: p for p in upkeep.problems(session, clock(), warn)}
    assert len(found) == 1 and next(iter(found.values())).severity == "critical"
    clock.advance(hours=24 * 6)  # the complete CRL and the Microsoft-style scope too
    with transaction(sessions) as session:
        keys = sorted(p.key for p in upkeep.problems(session, clock(), warn))
    assert len(keys) == 3 and f"expiry:{KEY}" in keys


# ---------------------------------------------------------------- the migration

def _old_table():
    return sa.table(
        "installed_crls", sa.column("id", sa.Integer), sa.column("issuer_key", sa.String),
        sa.column("issuer", sa.Text), sa.column("origin", sa.String),
        sa.column("source", sa.String), sa.column("number", sa.String),
        sa.column("this_update", UTCDateTime), sa.column("next_update", UTCDateTime),
        sa.column("entries", sa.Integer), sa.column("sha256", sa.String),
        sa.column("der", sa.LargeBinary), sa.column("current", sa.Boolean),
        sa.column("installed_at", UTCDateTime), sa.column("replaced_at", UTCDateTime))


def _old_row(der: bytes, *, key=KEY, origin="fetched", current, installed_at,
             replaced_at=None) -> dict:
    crl = x509.load_der_x509_crl(der)
    number = crl_install._number(crl)
    return dict(issuer_key=key, issuer=LABEL, origin=origin, source=None,
                number=None if number is None else str(number),
                this_update=crl.last_update_utc, next_update=crl.next_update_utc,
                entries=len(crl), sha256=hashlib.sha256(der).hexdigest(), der=der,
                current=current, installed_at=installed_at, replaced_at=replaced_at)


FAR = T0 + dt.timedelta(days=3650)  # the migration reads the real clock: stay clear of it


def test_the_migration_gives_rows_their_scope_and_restores_a_displaced_complete_crl(db_url):
    engine = make_engine(db_url)
    try:
        command.upgrade(alembic_config(engine), "0004")
        t1, t2, t3 = T0, T0 + HOUR, T0 + 2 * HOUR
        ms = idp(MS_LDAP, MS_HTTP)
        rows = [
            # the case: complete #10 displaced by partition #11
            _old_row(scoped_crl(None, number=10, serials=[1000], next_update=FAR),
                     current=False, installed_at=t1 - HOUR, replaced_at=t1),
            _old_row(scoped_crl(idp(PART2), number=11, next_update=FAR), current=True,
                     installed_at=t1),
            # a Microsoft CA: same IDP throughout, nothing to restore
            _old_row(scoped_crl(ms, number=1, next_update=FAR), key="b" * 64,
                     current=False, installed_at=t2 - HOUR, replaced_at=t2),
            _old_row(scoped_crl(ms, number=2, next_update=FAR), key="b" * 64, current=True,
                     installed_at=t2),
            # removed by hand (no successor): stays removed
            _old_row(scoped_crl(None, number=4, next_update=FAR), key="c" * 64,
                     origin="manual", current=False, installed_at=t3 - HOUR, replaced_at=t3),
            # displaced but expired by now: nothing worth restoring
            _old_row(scoped_crl(None, number=5, this_update=T0 - 3 * WEEK,
                                next_update=T0 - WEEK), key="d" * 64, current=False,
                     installed_at=t3 - HOUR, replaced_at=t3),
            _old_row(scoped_crl(idp(PART2), number=6, next_update=FAR), key="d" * 64,
                     current=True, installed_at=t3),
        ]
        with engine.begin() as conn:
            conn.execute(_old_table().insert(), rows)
        command.upgrade(alembic_config(engine), "head")
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            got = [(r.issuer_key[0], r.number, r.scope, r.current) for r in session.scalars(
                sa.select(InstalledCrl).order_by(InstalledCrl.id))]
        assert got == [
            (KEY[0], "10", COMPLETE, True), (KEY[0], "11", f"URI:{PART2}", True),
            ("b", "1", idp_text(ms), False), ("b", "2", idp_text(ms), True),
            ("c", "4", COMPLETE, False),
            ("d", "5", COMPLETE, False), ("d", "6", f"URI:{PART2}", True)]
        assert revoked_in_force(sessions, 1000) == [COMPLETE]
        with pytest.raises(IntegrityError), transaction(sessions) as session:
            row = crl_install.current(session, KEY, "fetched")
            session.add(InstalledCrl(**{
                c: getattr(row, c) for c in ("issuer_key", "issuer", "scope", "scope_key",
                                             "origin", "number", "this_update",
                                             "next_update", "entries", "sha256")},
                current=True, installed_at=T0))
            session.flush()
        # and back: one current CRL per issuer and origin again, the complete one kept
        command.downgrade(alembic_config(engine), "0004")
        old = _old_table()
        with engine.connect() as conn:
            current = conn.execute(sa.select(old.c.issuer_key, old.c.number)
                                   .where(old.c.current)).all()
        assert sorted(current) == sorted([(KEY, "10"), ("b" * 64, "2"), ("d" * 64, "6")])
    finally:
        engine.dispose()


def test_checked_crls_carry_their_scope(sessions, clock, complete10):
    with transaction(sessions) as session:
        checked = check(session, scoped_crl(idp(PART2), number=12), clock())
        assert (checked.scope.text, checked.label) == (f"URI:{PART2}",
                                                       f"{LABEL} (scope URI:{PART2})")
        assert check(session, complete10, clock()).label == LABEL
