"""Issue 9, classes 1-4: names in every RDN, subjectAltNames by type, the extensions a request
may bring, and the keys and algorithms pkiq signs. Each class is tried with several members,
on ``ca sign`` (domain), ``submit`` and ``ca create`` as they apply."""

from __future__ import annotations

import ipaddress
import json
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

from ca.errors import BadInput, PolicyViolation
from ca.general_names import EMAIL, URI, check_general_names
from ca.models import Certificate
from shell.db import transaction

from .conftest import cached_key, make_csr, openssl
from .domain import new_ca, sign
from .test_cli import assert_one_line_error

CN, ORG, OU = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME


def raw_csr(rdns: list[list[tuple]], *, sans=(), extensions=(), key=None) -> bytes:
    """A request built without cryptography's own checks, as a hostile requester would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = x509.Name([x509.RelativeDistinguishedName(
            [x509.NameAttribute(oid, value, *rest, _validate=False)
             for oid, value, *rest in rdn]) for rdn in rdns])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    csr = builder.sign(key or cached_key(), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def email(value: str) -> x509.RFC822Name:
    return x509.RFC822Name._init_without_validation(value)


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier._init_without_validation(value)


def dns(value: str) -> x509.DNSName:
    return x509.DNSName._init_without_validation(value)


def issued_count(sessions) -> int:
    with transaction(sessions) as session:
        return session.query(Certificate).count()


def refused(sessions, clock, csr, error=PolicyViolation, match=None, profile="webserver"):
    before = issued_count(sessions)
    with pytest.raises(error, match=match):
        sign(sessions, clock, "Root", csr, profile=profile)
    assert issued_count(sessions) == before


# ---------------------------------------------------------------- 1. names in every RDN

@pytest.mark.parametrize(("rdns", "match"), [
    ([[(CN, "*.example.com")], [(CN, "ok.example.com")]], "more than one commonName"),
    ([[(CN, "ok.example.com")], [(CN, "*.example.com")]], "more than one commonName"),
    ([[(CN, "payroll.example.com")], [(CN, "payroll.example.com")]], "more than one commonName"),
    ([[(ORG, "Example")], [(CN, "*.corp.example.com"), (ORG, "Corp")]], "multi-valued RDN"),
    ([[(CN, "ok.example.com"), (OU, "Ops")]], "multi-valued RDN"),
    ([[(ORG, "Example"), (OU, "Ops")], [(CN, "ok.example.com")]], "multi-valued RDN"),
], ids=["wildcard-cn-first", "wildcard-cn-last", "same-cn-twice", "cn-in-multivalued-rdn",
        "cn-plus-ou", "o-plus-ou"])
def test_every_rdn_is_checked_and_one_cn_at_most(sessions, clock, rdns, match):
    new_ca(sessions, clock)
    refused(sessions, clock, raw_csr(rdns), match=match)


@pytest.mark.parametrize(("oid", "length", "bound"), [
    (ORG, 65, 64), (ORG, 200, 64), (OU, 5000, 64), (NameOID.LOCALITY_NAME, 129, 128),
    (NameOID.STATE_OR_PROVINCE_NAME, 129, 128), (NameOID.TITLE, 65, 64),
    (NameOID.SERIAL_NUMBER, 65, 64), (NameOID.POSTAL_CODE, 41, 40),
    (NameOID.PSEUDONYM, 129, 128)])
def test_every_attribute_within_rfc5280_upper_bounds(sessions, clock, oid, length, bound):
    new_ca(sessions, clock)
    csr = raw_csr([[(oid, "A" * length)], [(CN, "ok.example.com")]])
    refused(sessions, clock, csr, BadInput, match=f"at most {bound}")
    # at the bound exactly it is issued
    sign(sessions, clock, "Root", raw_csr([[(oid, "A" * bound)], [(CN, "ok.example.com")]]),
         profile="webserver")


@pytest.mark.parametrize("char", [
    "\n", "\t", "\x00", "\x7f", "\x85", "\u202e", "\u202d", "\u2066", "\u2069", "\u200b",
    "\u200f", "\ufeff", "\u00ad", "\u2028", "\u2029", "\ue000"],
    ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("oid", [ORG, OU, CN])
def test_no_control_or_bidi_or_invisible_character_in_any_attribute(sessions, clock, char, oid):
    new_ca(sessions, clock)
    value = f"ok{char}moc.example.com" if oid == CN else f"Exa{char}mple"
    rdns = [[(oid, value)]] if oid == CN else [[(oid, value)], [(CN, "ok.example.com")]]
    refused(sessions, clock, raw_csr(rdns), BadInput, match=f"U\\+{ord(char):04X}")


@pytest.mark.parametrize("value", ["exa mple", "-corp", "corp_1", "a.b", "\u00e9"])
def test_a_domain_component_is_a_dns_label(sessions, clock, value):
    new_ca(sessions, clock)
    csr = raw_csr([[(NameOID.DOMAIN_COMPONENT, value)], [(CN, "ok.example.com")]])
    refused(sessions, clock, csr, BadInput, match="domainComponent|ASCII")


@pytest.mark.parametrize(("value", "match"), [
    ("gb", "capitals"), ("GBR", "(?i)country"), ("G1", "two-letter"), ("\u00dcK", "two-letter")])
def test_country_is_two_capital_letters(sessions, clock, value, match):
    new_ca(sessions, clock)
    csr = raw_csr([[(NameOID.COUNTRY_NAME, value, _ASN1Type.UTF8String)],
                   [(CN, "ok.example.com")]])
    refused(sessions, clock, csr, BadInput, match=match)


def test_request_string_types_are_reencoded_as_rfc5280_asks(sessions, clock):
    new_ca(sessions, clock)
    csr = raw_csr([[(NameOID.COUNTRY_NAME, "GB", _ASN1Type.UTF8String)],
                   [(ORG, "Soci\u00e9t\u00e9", _ASN1Type.BMPString)],
                   [(OU, "Ops", _ASN1Type.T61String)],
                   [(CN, "ok.example.com", _ASN1Type.UniversalString)]])
    cert = sign(sessions, clock, "Root", csr, profile="webserver").certificate
    types = {attr.oid: attr._type for attr in cert.subject}
    assert types == {NameOID.COUNTRY_NAME: _ASN1Type.PrintableString,
                     ORG: _ASN1Type.UTF8String, OU: _ASN1Type.UTF8String,
                     CN: _ASN1Type.UTF8String}
    assert cert.subject.get_attributes_for_oid(ORG)[0].value == "Soci\u00e9t\u00e9"


@pytest.mark.parametrize(("subject", "code", "match"), [
    ("/", 4, "may not be empty"),
    ("/CN=*.example.com/CN=Root", 4, "more than one commonName"),
    ("/O=" + "A" * 65 + "/CN=Root", 3, "at most 64"),
    ("/O=Exa\u202emple/CN=Root", 3, "U+202E"),
    ("/OU=\u200b/CN=Root", 3, "U+200B"),
    ("/C=gb/CN=Root", 3, "capitals"),
])
def test_ca_create_applies_the_same_name_rules(pkiq, subject, code, match):
    result = pkiq("ca", "create", "X", "--subject", subject, "--key-type", "ec-p256")
    assert_one_line_error(result, code, match)
    assert json.loads(pkiq("ca", "list", "--json").output) == []


def test_submit_applies_the_name_rules_before_queueing(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    hostile = {
        "two-cn.pem": raw_csr([[(CN, "*.example.com")], [(CN, "ok.example.com")]]),
        "multi.pem": raw_csr([[(CN, "*.corp.example.com"), (ORG, "Corp")]]),
        "long-o.pem": raw_csr([[(ORG, "A" * 200)], [(CN, "ok.example.com")]]),
        "bidi.pem": raw_csr([[(ORG, "Exa\u202emple")], [(CN, "ok.example.com")]]),
        "dirname.pem": raw_csr([[(CN, "ok.example.com")]], sans=[
            x509.DirectoryName(x509.Name([x509.NameAttribute(CN, "Evil Root CA")]))]),
    }
    files = []
    for name, data in hostile.items():
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    result = pkiq("submit", *files, "--ca", "R", "--json")
    assert result.exit_code == 9
    rows = json.loads(result.output)
    assert [r["state"] for r in rows] == ["refused"] * len(hostile)
    assert json.loads(pkiq("jobs", "list", "--json").output) == []


def test_the_two_cn_certificate_openssl_would_accept_is_never_issued(sessions, clock, tmp_path):
    """The defect as found: ``openssl verify -verify_hostname`` accepts a certificate for
    either CN, so a request naming an innocent CN and a wildcard must not be signed."""
    new_ca(sessions, clock)
    csr = raw_csr([[(CN, "*.example.com")], [(CN, "ok.example.com")]])
    refused(sessions, clock, csr, match="more than one commonName")
    good = sign(sessions, clock, "Root", make_csr("ok.example.com", sans=("ok.example.com",)),
                profile="webserver").certificate
    (tmp_path / "c.pem").write_bytes(good.public_bytes(serialization.Encoding.PEM))
    with transaction(sessions) as session:
        from ca import authority
        root = authority.ca_certificate(authority.get_ca(session, "Root"))
    (tmp_path / "ca.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    ok = openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), "-verify_hostname",
                 "ok.example.com", str(tmp_path / "c.pem"), check=False)
    assert ok.returncode == 0, ok.stderr
    other = openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), "-verify_hostname",
                    "payroll.example.com", str(tmp_path / "c.pem"), check=False)
    assert other.returncode != 0


# ---------------------------------------------------------------- 2. SANs by type

UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")


@pytest.mark.parametrize(("name", "rule"), [
    (x509.IPAddress(ipaddress.IPv4Network("10.0.0.0/8")), "4 octets"),
    (x509.IPAddress(ipaddress.IPv6Network("2001:db8::/32")), "4 octets"),
    (x509.OtherName(UPN, b"\x0c\x11admin@example.com"), "otherName"),
    (x509.DirectoryName(x509.Name([x509.NameAttribute(CN, "Evil Root CA")])), "dirName"),
    (email("admin@example.com"), "email"),
    (uri("https://evil.example/x"), "URI"),
    (x509.RegisteredID(ObjectIdentifier("1.2.3.4")), "RID"),
], ids=["ip-8-octets", "ip-32-octets", "upn", "dirname", "email", "uri", "rid"])
@pytest.mark.parametrize("profile", ["webserver", "webclientandserver", "client"])
def test_tls_profiles_allow_dns_and_ip_only(sessions, clock, name, rule, profile):
    new_ca(sessions, clock)
    csr = raw_csr([[(CN, "ok.example.com")]], sans=[x509.DNSName("ok.example.com"), name])
    refused(sessions, clock, csr, match=rule, profile=profile)


@pytest.mark.parametrize("name", [
    "exa mple.com", "-bad.example.com", "bad-.example.com", "a..example.com",
    "trailing.example.com.", "caf\u00e9.example.com", "a" * 64 + ".example.com",
    ".".join(["a" * 50] * 5) + ".com", "xn--zz-.example.com", "xn--a.example.com",
    "ab--cd.example.com", "10.0.0.1", "host_name.example.com", "*.example.com",
    "w*.example.com", "host.123", "", "ok.example.com\x00.evil.com"])
def test_dns_names_are_ldh_and_idna(sessions, clock, name):
    new_ca(sessions, clock)
    csr = raw_csr([[(CN, "ok.example.com")]], sans=[x509.DNSName("ok.example.com"),
                                                    dns(name)])
    refused(sessions, clock, csr, (PolicyViolation, BadInput))


@pytest.mark.parametrize("ip", ["0.0.0.0", "224.0.0.1", "::", "ff02::1"])
def test_ip_sans_name_a_host(sessions, clock, ip):
    new_ca(sessions, clock)
    csr = raw_csr([[(CN, "ok.example.com")]],
                  sans=[x509.IPAddress(ipaddress.ip_address(ip))])
    refused(sessions, clock, csr, match="names no host")


def test_valid_names_of_every_tls_type_are_issued_and_openssl_matches_them(sessions, clock,
                                                                            tmp_path):
    new_ca(sessions, clock)
    sans = [x509.DNSName("ok.example.com"), x509.DNSName("xn--caf-dma.example.com"),
            x509.DNSName("peer-1.Example.COM"), x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
            x509.IPAddress(ipaddress.ip_address("2001:db8::7")), x509.DNSName("ok.example.com")]
    result = sign(sessions, clock, "Root", raw_csr([[(CN, "ok.example.com")]], sans=sans),
                  profile="webserver")
    san = result.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical and list(san.value) == sans[:5]  # the repeat is dropped
    assert any("listed twice" in w for w in result.warnings)
    (tmp_path / "c.pem").write_bytes(result.certificate.public_bytes(serialization.Encoding.PEM))
    openssl("x509", "-in", str(tmp_path / "c.pem"), "-noout", "-checkip", "2001:db8::7")


@pytest.mark.parametrize(("name", "ok"), [
    (email("ops@example.com"), True),
    (email("first.last+tag@mail.example.com"), True),
    (email("no-at-sign.example.com"), False),
    (email("two@@example.com"), False),
    (email('"quoted"@example.com'), False),
    (email("a..b@example.com"), False),
    (email("ops@exa_mple.com"), False),
    (email("x" * 65 + "@example.com"), False),
    (uri("https://pki.example.com/ca?x=1#f"), True),
    (uri("sip:peer@example.com"), False),  # no authority
    (uri("/relative/path"), False),
    (uri("https://user:secret@example.com/"), False),
    (uri("https://exa mple.com/"), False),
    (uri("https://example.com/%zz"), False),
    (uri("https://example.com:99999/"), False),
    (uri("javascript://%0aalert(1)"), False),
    (uri("https://" + "a" * 2050 + ".com/"), False),
])
def test_email_and_uri_syntax_where_a_profile_allows_them(name, ok):
    if ok:
        assert check_general_names([name], (EMAIL, URI), "custom")[0] == [name]
    else:
        with pytest.raises(PolicyViolation):
            check_general_names([name], (EMAIL, URI), "custom")


# ---------------------------------------------------------------- 3. what a request may bring

HOSTILE = [
    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
                            ExtendedKeyUsageOID.CODE_SIGNING,
                            ExtendedKeyUsageOID.OCSP_SIGNING]), False),
    (x509.OCSPNoCheck(), False),
    (x509.KeyUsage(True, True, True, True, True, True, True, False, False), False),
    (x509.BasicConstraints(ca=True, path_length=None), True),
    (x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier("2.5.29.32.0"), None)]),
     False),
    (x509.TLSFeature([x509.TLSFeatureType.status_request]), False),
    (x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"), True),
    (x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.2"), b"\x05\x00"), False),
]


@pytest.mark.parametrize("mode", ["copy", "copyall"])
@pytest.mark.parametrize("profile", ["webserver", "webclientandserver", "client", "subca"])
def test_only_copyable_extensions_reach_a_certificate(sessions, clock, mode, profile):
    new_ca(sessions, clock, copy_extensions=mode)
    csr = raw_csr([[(CN, "ok.example.com")]], extensions=[
        (x509.SubjectAlternativeName([x509.DNSName("ok.example.com")]), True), *HOSTILE])
    result = sign(sessions, clock, "Root", csr, profile=profile)
    exts = {e.oid: e for e in result.certificate.extensions}
    expected = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE,
                ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER}
    if profile != "subca":
        expected |= {ExtensionOID.EXTENDED_KEY_USAGE, ExtensionOID.SUBJECT_ALTERNATIVE_NAME}
        assert not exts[ExtensionOID.SUBJECT_ALTERNATIVE_NAME].critical  # subject not empty
        ekus = set(exts[ExtensionOID.EXTENDED_KEY_USAGE].value)
        assert ekus <= {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert set(exts) == expected
    assert exts[ExtensionOID.KEY_USAGE].critical and exts[ExtensionOID.BASIC_CONSTRAINTS].critical
    assert exts[ExtensionOID.BASIC_CONSTRAINTS].value.ca is (profile == "subca")
    assert exts[ExtensionOID.KEY_USAGE].value.key_cert_sign is (profile == "subca")
    notes = " ".join(result.warnings)
    for named in ("codeSigning", "OCSPNoCheck", "certificatePolicies", "1.3.6.1.4.1.55555.1"):
        assert named in notes


def test_a_request_that_asks_for_what_the_profile_gives_is_not_warned_about(sessions, clock):
    new_ca(sessions, clock)
    csr = raw_csr([[(CN, "ok.example.com")]], extensions=[
        (x509.SubjectAlternativeName([x509.DNSName("ok.example.com")]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(True, False, True, False, False, False, False, False, False), True)])
    assert sign(sessions, clock, "Root", csr, profile="webclientandserver").warnings == []


# ---------------------------------------------------------------- 4. keys and algorithms

@pytest.mark.parametrize("exponent", ["3", "17", "257"])
def test_small_rsa_exponents_are_refused(sessions, clock, tmp_path, exponent):
    new_ca(sessions, clock)
    key = tmp_path / "k.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-pkeyopt",
            f"rsa_keygen_pubexp:{exponent}", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=e.example.com", "-out",
            str(tmp_path / "r.csr"))
    refused(sessions, clock, (tmp_path / "r.csr").read_bytes(), match=f"exponent {exponent} ")


@pytest.mark.parametrize("key", [ed25519.Ed25519PrivateKey.generate(),
                                 ed448.Ed448PrivateKey.generate()], ids=["ed25519", "ed448"])
def test_eddsa_request_keys_are_refused(sessions, clock, key):
    new_ca(sessions, clock)
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(CN, "ok.example.com")])).sign(key, None)
    refused(sessions, clock, csr.public_bytes(serialization.Encoding.PEM), match="EdDSA")


def test_md5_signed_requests_are_refused_as_such(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    key = tmp_path / "k.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=m.example.com", "-md5",
            "-out", str(tmp_path / "r.csr"))
    assert_one_line_error(pkiq("ca", "sign", "R", tmp_path / "r.csr"), 4, "signed with MD5")
    submitted = pkiq("submit", tmp_path / "r.csr", "--ca", "R", "--json")
    assert submitted.exit_code == 9
    [row] = json.loads(submitted.output)
    assert row["state"] == "refused" and "MD5" in row["error"]


@pytest.mark.parametrize("value", ["hostmaster", "a@b@example.com", "ops@exa mple.com",
                                   "ops@example.com."])
def test_an_email_address_in_a_dn_must_be_a_mailbox(sessions, clock, value):
    new_ca(sessions, clock)
    csr = raw_csr([[(NameOID.EMAIL_ADDRESS, value)], [(CN, "ok.example.com")]])
    refused(sessions, clock, csr, match="mailbox|host name")


def test_an_email_address_is_left_out_of_issued_subjects_and_refused_in_a_ca(sessions, clock,
                                                                              pkiq):
    new_ca(sessions, clock)
    csr = raw_csr([[(NameOID.EMAIL_ADDRESS, "ops@example.com")], [(CN, "ok.example.com")]])
    result = sign(sessions, clock, "Root", csr, profile="webserver")
    assert not result.certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
    assert any("emailAddress left out" in w for w in result.warnings)
    made = pkiq("ca", "create", "E", "--subject", "/emailAddress=pki@example.com/CN=E CA",
                "--key-type", "ec-p256")
    assert_one_line_error(made, 4, "emailAddress")
