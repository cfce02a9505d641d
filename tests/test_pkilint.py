"""DigiCert's pkilint as a gate over everything pkiq issues.

RFC 5280 (certificates, issuer/subject pairs, CRLs): no ERROR or FATAL finding, for root and
subordinate CAs, every profile with RSA and EC request keys under RSA and EC CAs with and
without CRL/AIA URLs, and CRLs with every reason pkiq accepts and invalidity dates.
CA/Browser Forum TLS Baseline Requirements: pkiq is a private PKI, so findings remain; the
exact set per artifact is asserted, each with its cause, so a new one fails here and has to
be understood and written into the README's "Linting (pkilint)" section.

Artifacts are made through the service layer (``service.cas``, what ``pkiq ca ...`` calls)
on one SQLite database per module, on first use, so a refused input fails its own case only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pkilint import finding_filter, loader, pkix
from pkilint.bin import lint_pkix_signer_signee_cert_chain as chain_lint
from pkilint.cabf import cabf_crl, serverauth
from pkilint.pkix import certificate, crl, extension, name
from pkilint.validation import ValidationFindingSeverity as Severity

from ca.crl import REASONS
from ca.errors import PkiqError
from ca.profiles import PROFILES
from service import ServiceContext, cas
from shell.settings import Settings

from .conftest import PASSPHRASE, FakeClock, cached_key, make_csr

PASS = PASSPHRASE.encode()
README = Path(__file__).parent.parent / "README.md"


# ---------------------------------------------------------------- pkilint, in process

class Finding(NamedTuple):
    severity: str
    code: str
    message: str | None
    path: str

    def __str__(self) -> str:
        message = f": {self.message[:200]}" if self.message else ""  # some quote the value
        return f"{self.severity} {self.code} @ {self.path}{message}"


def _findings(results) -> list[Finding]:
    return [Finding(fd.finding.severity.name, fd.finding.code, fd.message, r.node.path)
            for r in results for fd in r.finding_descriptions]


def lint_certificate(der: bytes) -> list[Finding]:
    """pkilint's ``lint_pkix_cert`` (RFC 5280 certificate profile)."""
    validator = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS,
                                               extension.EXTENSION_MAPPINGS),
        [certificate.create_issuer_validator_container([]),
         certificate.create_validity_validator_container(),
         certificate.create_subject_validator_container([]),
         certificate.create_extensions_validator_container([]),
         certificate.create_spki_validator_container([])])
    return _findings(validator.validate(loader.load_der_certificate(der, "certificate").root))


def lint_chain(issuer_der: bytes, subject_der: bytes) -> list[Finding]:
    """pkilint's ``lint_pkix_signer_signee_cert_chain``: names, key identifiers, policies and
    the signature of one issuer/subject pair."""
    docs: dict = {}
    docs["issuer"] = loader.load_der_certificate(issuer_der, "issuer", "issuer", docs)
    docs["subject"] = loader.load_der_certificate(subject_der, "subject", "subject", docs)
    decoders = chain_lint.create_decoder_validation_container()
    results = (decoders.validate(docs["issuer"].root) + decoders.validate(docs["subject"].root)
               + chain_lint.create_issuer_validation_container().validate(docs["issuer"].root)
               + chain_lint.create_subject_validation_container().validate(
                   docs["subject"].root))
    return _findings(results)


def lint_crl(der: bytes) -> list[Finding]:
    """pkilint's ``lint_crl --type CRL --profile PKIX`` (RFC 5280 CRL profile)."""
    validator = crl.create_pkix_crl_validator_container(
        [pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)],
        [crl.create_issuer_validator_container([]),
         crl.create_validity_validator_container([]),
         crl.create_extensions_validator_container([])])
    return _findings(validator.validate(loader.load_der_crl(der, "crl").root))


def lint_crl_serverauth(der: bytes) -> list[Finding]:
    """pkilint's ``lint_crl --type CRL --profile BR`` (the BRs' CRL rules on top of PKIX)."""
    kind = crl.CertificateRevocationListType.CRL
    validator = crl.create_pkix_crl_validator_container(
        [pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)],
        [crl.create_issuer_validator_container([]),
         crl.create_validity_validator_container([cabf_crl.create_validity_period_validator(kind)]),
         crl.create_extensions_validator_container([]),
         cabf_crl.CabfCrlReasonCodeAllowlistValidator(kind)])
    return _findings(validator.validate(loader.load_der_crl(der, "crl").root))


def lint_serverauth(der: bytes) -> tuple[str, list[Finding]]:
    """pkilint's ``lint_cabf_serverauth_cert --detect`` (with its default finding filters)."""
    cert = loader.load_der_certificate(der, "certificate")
    kind = serverauth.determine_certificate_type(cert)
    validator = certificate.create_pkix_certificate_validator_container(
        serverauth.create_decoding_validators(), serverauth.create_validators(kind))
    results, _ = finding_filter.filter_results(
        serverauth.create_serverauth_finding_filters(kind), validator.validate(cert.root))
    return kind.name, _findings(results)


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if Severity[f.severity] <= Severity.ERROR]


def report(artifact: str, findings: list[Finding]) -> None:
    """Warnings, notices and info go to the test's output (``pytest -rP``) for the record."""
    for finding in findings:
        print(f"{artifact}: {finding}")


# ---------------------------------------------------------------- what pkiq issues

T0 = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)  # after the BRs' 200-day rule began


@dataclasses.dataclass(frozen=True)
class CaSpec:
    key_type: str
    parent: str | None = None
    changes: cas.CaChanges = cas.CaChanges()  # given to ``ca create``
    configure: cas.CaChanges | None = None  # then given to ``ca configure``

    @property
    def options(self) -> cas.CaChanges:
        """What shapes the CA's certificates: the settings configured later, else those given
        at creation (the specs below use one or the other)."""
        return self.configure or self.changes

    @property
    def crl_urls(self) -> tuple[str, ...]:
        return self.options.crl_url

    @property
    def has_aia(self) -> bool:
        return bool(self.options.ca_issuers_url or self.options.ocsp_url)

    @property
    def http_revocation(self) -> bool:
        """A CRL or OCSP URL over plain HTTP, as Microsoft's root program asks."""
        return any(u.startswith("http://") for u in (*self.crl_urls, *self.options.ocsp_url))

    def validity(self, profile: str) -> dt.timedelta:
        """As the BRs count it: notBefore is backdated by the clock-skew margin (300 s) and
        both ends are inclusive (one more second)."""
        days = dict(item.split("=") for item in self.options.profile_days)
        return dt.timedelta(days=int(days.get(profile, 365)), seconds=301)


HTTP_URLS = dict(crl_url=("http://pki.example.com/root.crl",),
                 ca_issuers_url=("http://pki.example.com/root.cer",),
                 ocsp_url=("http://ocsp.example.com/",))
CAS = {
    "root-rsa2048": CaSpec("rsa2048"),
    # URLs added afterwards, as `pkiq ca configure --crl-url ...` does
    "root-rsa4096": CaSpec("rsa4096", configure=cas.CaChanges(**HTTP_URLS)),
    "root-ec-p256": CaSpec("ec-p256"),
    "root-ec-p384": CaSpec("ec-p384", changes=cas.CaChanges(**HTTP_URLS)),
    # `ca create --parent`; the best a private TLS CA can do against the BRs with pkiq's
    # options: short TLS validity, HTTP CRL and AIA, a policy that keeps only the CN.
    "sub-ec-p256": CaSpec("ec-p256", parent="root-rsa4096", changes=cas.CaChanges(
        policy="commonName=supplied",
        profile_days=("webserver=198", "webclientandserver=199"),
        crl_url=("http://pki.example.com/issuing.crl",),
        ca_issuers_url=("http://pki.example.com/issuing.cer",))),
    # an LDAP distribution point only (pkiq accepts ldap:// URLs)
    "sub-rsa2048": CaSpec("rsa2048", parent="root-ec-p384", changes=cas.CaChanges(
        crl_url=("ldap://ldap.example.com/cn=Example%20Issuing%20CA,o=Example"
                 "?certificateRevocationList;binary",))),
}
REQUEST_KEYS = ("rsa2048", "ec-p256")


@dataclasses.dataclass(frozen=True)
class CertCase:
    """A CA certificate (``profile`` None) or one signed request."""

    ca: str
    profile: str | None = None
    request_key: str | None = None

    @property
    def id(self) -> str:
        if self.profile is None:
            return f"ca-{self.ca}"
        return f"{self.profile}-{self.request_key}-by-{self.ca}"


CERT_CASES = [CertCase(ca) for ca in CAS] + [
    CertCase(ca, profile, key)
    for ca, spec in CAS.items() for profile in PROFILES for key in REQUEST_KEYS
    # a subordinate CA has pathlen 0: pkiq refuses to sign another CA with it
    if not (spec.parent and PROFILES[profile].is_ca)
]
assert {c.profile for c in CERT_CASES} >= set(PROFILES)

# Every reason `pkiq ca revoke` accepts (removeFromCRL belongs to delta CRLs, refused).
REVOKE_REASONS = [r for r in REASONS if r != "removeFromCRL"]
CRL_CAS = ("root-rsa2048", "root-ec-p384", "sub-ec-p256")
CRL_KINDS = ("empty", "every-reason", "hold-released")
CRL_CASES = [f"crl-{kind}-by-{ca}" for ca in CRL_CAS for kind in CRL_KINDS]


def der(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.DER)


class Pki:
    """One database for the module; CAs, certificates and CRLs made on first use."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self.made: set[str] = set()
        self.certs: dict[str, tuple[bytes, bytes]] = {}  # id -> (certificate, issuer)
        self.crls: dict[str, tuple[bytes, dict[int, str]]] = {}  # id -> (CRL, serial labels)

    def ca(self, name: str) -> bytes:
        spec = CAS[name]
        if name not in self.made:
            if spec.parent:
                self.ca(spec.parent)
            cas.create_ca(self.ctx, name=name, subject=f"/C=GB/O=Example/CN=Example {name} CA",
                          key_type=spec.key_type, days=3650, passphrase=PASS,
                          changes=spec.changes, parent=spec.parent, parent_passphrase=PASS)
            if spec.configure is not None:
                cas.configure_ca(self.ctx, name, spec.configure)
            self.made.add(name)
        return der(cas.show_ca(self.ctx, name)[1])

    def preserving_ca(self) -> str:
        """A CA that keeps every DN field of a request (``--preserve-dn``)."""
        if "preserving" not in self.made:
            cas.create_ca(self.ctx, name="preserving", subject="/C=GB/O=Example/CN=Keep-all CA",
                          key_type="ec-p256", days=3650, passphrase=PASS,
                          changes=cas.CaChanges(preserve_dn=True))
            self.made.add("preserving")
        return "preserving"

    def sign(self, ca: str, profile: str, key: str, cn: str) -> x509.Certificate:
        self.ca(ca)
        if PROFILES[profile].is_ca:
            csr = make_csr(f"Example {cn} CA", key=cached_key(key))
        else:
            host = f"{cn}.example.com"
            csr = make_csr(host, sans=(host, "peer1.example.com"), key=cached_key(key))
        return cas.sign_request(self.ctx, ca, csr, passphrase=PASS, profile=profile).certificate

    def cert(self, case: CertCase) -> tuple[bytes, bytes]:
        if case.id not in self.certs:
            spec = CAS[case.ca]
            if case.profile is None:
                issuer = self.ca(spec.parent) if spec.parent else self.ca(case.ca)
                self.certs[case.id] = (self.ca(case.ca), issuer)
            else:
                cn = f"{case.profile}-{case.request_key}-{case.ca}"
                cert = self.sign(case.ca, case.profile, case.request_key, cn)
                self.certs[case.id] = (der(cert), self.ca(case.ca))
        return self.certs[case.id]

    def crl(self, case: str) -> tuple[bytes, dict[int, str]]:
        """The three CRLs of a CA, in order: before any revocation, with one entry per reason
        (each reason with an invalidity date, two also without), and after a hold released."""
        ca = case.split("-by-")[1]
        if case not in self.crls:
            self.ca(ca)
            labels: dict[int, str] = {}
            self.crls[f"crl-empty-by-{ca}"] = (
                der(cas.generate_crl(self.ctx, ca, passphrase=PASS).crl), dict(labels))
            revocations = [(r, True) for r in REVOKE_REASONS]
            revocations += [("unspecified", False), ("keyCompromise", False)]
            held = None
            for index, (reason, dated) in enumerate(revocations):
                serial = self.sign(ca, "webserver", "ec-p256", f"revoked{index}").serial_number
                invalidity = T0 - dt.timedelta(days=3, hours=index) if dated else None
                cas.revoke(self.ctx, ca, format(serial, "x"), reason=reason,
                           invalidity_date=invalidity)
                labels[serial] = f"{reason}{' with invalidity date' if dated else ''}"
                if reason == "certificateHold":
                    held = serial
            self.crls[f"crl-every-reason-by-{ca}"] = (
                der(cas.generate_crl(self.ctx, ca, passphrase=PASS).crl), dict(labels))
            cas.release_hold(self.ctx, ca, format(held, "x"))
            del labels[held]
            self.crls[f"crl-hold-released-by-{ca}"] = (
                der(cas.generate_crl(self.ctx, ca, passphrase=PASS).crl), dict(labels))
        return self.crls[case]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pkilint")
    settings = Settings(data_dir=folder / "data", database_url=f"sqlite:///{folder / 'pkiq.db'}",
                        ca_passphrase=PASSPHRASE)
    ctx = ServiceContext(settings, FakeClock(T0))
    yield Pki(ctx)
    ctx.close()


# ---------------------------------------------------------------- RFC 5280: a gate

@pytest.mark.parametrize("case", CERT_CASES, ids=lambda c: c.id)
def test_rfc5280_certificate_and_chain_have_no_errors(pki, case):
    cert, issuer = pki.cert(case)
    findings = lint_certificate(cert) + lint_chain(issuer, cert)
    report(case.id, findings)
    assert errors(findings) == [], f"{case.id}: " + "; ".join(map(str, errors(findings)))


def _entry(finding: Finding, crl_der: bytes, labels: dict[int, str]) -> str | None:
    """Which revocation a CRL finding is about (its reason, dated or not), if an entry's."""
    match = re.search(r"revokedCertificates\.(\d+)", finding.path)
    if not match:
        return None
    return labels[list(x509.load_der_x509_crl(crl_der))[int(match[1])].serial_number]


@pytest.mark.parametrize("case", CRL_CASES)
def test_rfc5280_crl_has_no_errors(pki, case):
    crl_der, labels = pki.crl(case)
    entries = list(x509.load_der_x509_crl(crl_der))
    assert len(entries) == len(labels)  # the CRL holds what was revoked, and only that
    findings = lint_crl(crl_der)
    report(case, findings)
    assert errors(findings) == [], f"{case}: " + "; ".join(
        f"{f} (entry: {_entry(f, crl_der, labels)})" for f in errors(findings))


def test_every_reason_crl_has_every_reason_and_invalidity_dates(pki):
    """The gate lints what it claims to: each accepted reason is on the CRL, with dates."""
    for ca in CRL_CAS:
        revoked = list(x509.load_der_x509_crl(pki.crl(f"crl-every-reason-by-{ca}")[0]))
        reasons = set()
        dated = 0
        for entry in revoked:
            for ext in entry.extensions:
                if isinstance(ext.value, x509.CRLReason):
                    reasons.add(ext.value.reason)
                if isinstance(ext.value, x509.InvalidityDate):
                    dated += 1
        # 'unspecified' is left out of an entry, as RFC 5280 5.3.1 recommends
        assert reasons == {REASONS[r] for r in REVOKE_REASONS} - {REASONS["unspecified"]}
        assert dated == len(REVOKE_REASONS)


# ---------------------------------------------------------------- CA/B Forum: documented

class Rule(NamedTuple):
    severity: str
    applies: object  # (CertCase, CaSpec) -> bool


def _end_entity(c, s):
    return c.profile is not None and not PROFILES[c.profile].is_ca


def _ca_cert(c, s):
    return c.profile is None or PROFILES[c.profile].is_ca


def _subordinate(c, s):
    return (c.profile is None and CAS[c.ca].parent is not None) or (
        c.profile is not None and PROFILES[c.profile].is_ca)


def _ldap_crl(c, s):
    return any(u.startswith("ldap:") for u in s.crl_urls)


def _issuer(case: CertCase) -> CaSpec:
    """The CA whose options (URLs, policy, days) shaped the certificate; a root signs
    itself with none of them."""
    spec = CAS[case.ca]
    if case.profile is None:
        return CAS[spec.parent] if spec.parent else CaSpec(spec.key_type)
    return spec


DAYS_199, DAYS_200 = dt.timedelta(days=199), dt.timedelta(days=200)
# Every CA/B Forum finding pkiq's TLS chain still draws, and when. README.md says why each
# is acceptable for a private PKI, or which option removes it.
CABF_RULES = {
    "cabf.ca_certificate_no_digital_signature_bit": Rule("NOTICE", _ca_cert),
    "cabf.serverauth.ca.certificate_policies_extension_absent": Rule("ERROR", _subordinate),
    "cabf.serverauth.ca.extended_key_usage_extension_absent": Rule("ERROR", _subordinate),
    "cabf.serverauth.ca.crl_distribution_points_extension_absent": Rule(
        "ERROR", lambda c, s: _subordinate(c, s) and not s.crl_urls),
    "cabf.serverauth.ca.authority_info_access_extension_absent": Rule(
        "WARNING", lambda c, s: _subordinate(c, s) and not s.has_aia),
    "cabf.serverauth.subscriber.certificate_policies_extension_absent":
        Rule("ERROR", _end_entity),
    "cabf.serverauth.subscriber.subject_key_identifier_extension_present":
        Rule("WARNING", _end_entity),
    "cabf.serverauth.dv.common_name_attribute_present": Rule("WARNING", _end_entity),
    "cabf.serverauth.dv.unknown_attribute_present": Rule(
        "ERROR", lambda c, s: _end_entity(c, s) and not s.options.policy),
    "cabf.serverauth.certificate_validity_period_exceeds_200_days": Rule(
        "ERROR", lambda c, s: _end_entity(c, s) and s.validity(c.profile) > DAYS_200),
    "cabf.serverauth.certificate_validity_period_exceeds_199_days": Rule(
        "WARNING", lambda c, s: _end_entity(c, s)
        and DAYS_199 < s.validity(c.profile) <= DAYS_200),
    "cabf.serverauth.subscriber_rsa_digitalsignature_and_keyencipherment_present": Rule(
        "WARNING", lambda c, s: _end_entity(c, s) and c.request_key.startswith("rsa")),
    "cabf.serverauth.subscriber.revocation_information_absent": Rule(
        "ERROR", lambda c, s: _end_entity(c, s) and not (s.crl_urls or s.options.ocsp_url)),
    "msft.end_entity.revocation_information_absent": Rule(
        "ERROR", lambda c, s: _end_entity(c, s) and not s.http_revocation),
    "cabf.serverauth.subscriber.authority_info_access_extension_absent": Rule(
        "ERROR", lambda c, s: _end_entity(c, s) and not s.has_aia),
    "cabf.serverauth.crldp_dpname_prohibited_uri_scheme": Rule("ERROR", _ldap_crl),
    "pkix.ldap_uri_not_validated": Rule("NOTICE", _ldap_crl),
}
# The BRs govern serverAuth certificates and the CAs that issue them; `client` is not one.
CABF_CASES = [c for c in CERT_CASES if c.profile != "client"]


def expected_cabf(case: CertCase) -> dict[str, str]:
    spec = _issuer(case)
    return {code: rule.severity for code, rule in CABF_RULES.items()
            if rule.applies(case, spec)}


@pytest.mark.parametrize("case", CABF_CASES, ids=lambda c: c.id)
def test_cabf_serverauth_findings_are_the_documented_ones(pki, case):
    cert, _ = pki.cert(case)
    kind, findings = lint_serverauth(cert)
    report(f"{case.id} [{kind}]", findings)
    found = {f.code: f.severity for f in findings if Severity[f.severity] <= Severity.NOTICE}
    assert found == expected_cabf(case), (
        f"{case.id} ({kind}): new {sorted(found.keys() - expected_cabf(case).keys())}, "
        f"gone {sorted(expected_cabf(case).keys() - found.keys())}")


# The BRs allow a subscriber certificate's CRL entry no CA or AA compromise and no hold.
CABF_CRL_CODE = "cabf.crl_prohibited_reason_code"
CABF_CRL_PROHIBITED = {"CACompromise", "AACompromise", "certificateHold"}


@pytest.mark.parametrize("ca", CRL_CAS)
def test_cabf_crl_findings_are_the_documented_ones(pki, ca):
    crl_der, labels = pki.crl(f"crl-every-reason-by-{ca}")
    findings = lint_crl_serverauth(crl_der)
    report(f"crl-every-reason-by-{ca} [BR]", findings)
    assert {f.code for f in findings} == {CABF_CRL_CODE}
    prohibited = {_entry(f, crl_der, labels).split()[0] for f in findings}
    assert prohibited == CABF_CRL_PROHIBITED


def test_cabf_rules_each_seen_and_documented():
    """No rule is dead (each applies to some artifact), and the README names each one."""
    section = README.read_text().split("### Linting (pkilint)", 1)
    assert len(section) == 2, "README.md needs a '### Linting (pkilint)' section"
    text = section[1].split("\n### ", 1)[0]
    for code in CABF_RULES:
        assert any(code in expected_cabf(c) for c in CABF_CASES), code
    for code in [*CABF_RULES, CABF_CRL_CODE]:
        assert f"`{code}`" in text, f"README's Linting (pkilint) section does not explain {code}"


# ---------------------------------------------------------------- hostile input: refused or clean

def _attr(oid, value: str) -> x509.NameAttribute:
    return x509.NameAttribute(oid, value, _validate=False)  # as a hostile requester would


def _hostile_csr(subject: list[x509.NameAttribute], sans: list[x509.GeneralName]) -> bytes:
    cn = _attr(NameOID.COMMON_NAME, "hostile.example.com")
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([_attr(NameOID.COUNTRY_NAME, "GB"), *subject, cn]))
    builder = builder.add_extension(x509.SubjectAlternativeName(
        [x509.DNSName("hostile.example.com"), *sans]), critical=False)
    return builder.sign(cached_key("ec-p256"), hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


# Each draws a pkilint ERROR or FATAL when issued as is: over RFC 5280 Appendix A's upper
# bounds (pkilint cannot even decode them), GeneralNames that break their syntax, and even a
# well-formed emailAddress in the DN that the SAN does not repeat (RFC 5280 4.1.2.6 says new
# certificates MUST put it in an rfc822Name; `openssl req` asks for one by default).
HOSTILE_REQUESTS = {
    "O-65-chars": ([_attr(NameOID.ORGANIZATION_NAME, "o" * 65)], []),
    "O-200-chars": ([_attr(NameOID.ORGANIZATION_NAME, "o" * 200)], []),
    "OU-65-chars": ([_attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 65)], []),
    "OU-5000-chars": ([_attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 5000)], []),
    "L-129-chars": ([_attr(NameOID.LOCALITY_NAME, "l" * 129)], []),
    "ST-129-chars": ([_attr(NameOID.STATE_OR_PROVINCE_NAME, "s" * 129)], []),
    "serialNumber-65-chars": ([_attr(NameOID.SERIAL_NUMBER, "1" * 65)], []),
    "title-65-chars": ([_attr(NameOID.TITLE, "t" * 65)], []),
    "emailAddress-256-chars": ([_attr(NameOID.EMAIL_ADDRESS, "a" * 244 + "@example.com")], []),
    "emailAddress-no-at": ([_attr(NameOID.EMAIL_ADDRESS, "hostmaster")], []),
    "emailAddress-not-in-SAN": ([_attr(NameOID.EMAIL_ADDRESS, "hostmaster@example.com")], []),
    "SAN-DNS-trailing-dot": ([], [x509.DNSName("peer1.example.com.")]),
    "SAN-IPv4-8-octets": ([], [x509.IPAddress(ipaddress.IPv4Network("10.0.0.0/8"))]),
    "SAN-IPv6-32-octets": ([], [x509.IPAddress(ipaddress.IPv6Network("fd00::/8"))]),
    "SAN-URI-with-space": ([], [x509.UniformResourceIdentifier("http://exa mple.com/")]),
    "SAN-URI-no-scheme": ([], [x509.UniformResourceIdentifier("//example.com/x")]),
    "SAN-email-no-at": ([], [x509.RFC822Name("hostmaster")]),
}


@pytest.mark.parametrize("label", HOSTILE_REQUESTS)
def test_a_hostile_request_is_refused_or_issued_lint_clean(pki, label):
    """``ca sign`` on a CA that keeps every DN field (``--preserve-dn``): pkiq refuses the
    request with its own error, or what it issues passes the RFC 5280 linter."""
    subject, sans = HOSTILE_REQUESTS[label]
    try:
        issued = cas.sign_request(pki.ctx, pki.preserving_ca(), _hostile_csr(subject, sans),
                                  passphrase=PASS, profile="webserver")
    except PkiqError:
        return
    findings = lint_certificate(der(issued.certificate))
    assert errors(findings) == [], f"{label} was issued: " + "; ".join(
        map(str, errors(findings)))


HOSTILE_CA_SUBJECTS = {
    "empty": "/",
    "O-200-chars": f"/C=GB/O={'o' * 200}/CN=Hostile CA",
    "OU-65-chars": f"/C=GB/OU={'u' * 65}/CN=Hostile CA",
    "L-129-chars": f"/C=GB/L={'l' * 129}/CN=Hostile CA",
    "ST-129-chars": f"/C=GB/ST={'s' * 129}/CN=Hostile CA",
    "serialNumber-65-chars": f"/C=GB/serialNumber={'1' * 65}/CN=Hostile CA",
    "emailAddress-no-at": "/C=GB/emailAddress=hostmaster/CN=Hostile CA",
    "emailAddress-not-in-SAN": "/C=GB/emailAddress=pki@example.com/CN=Hostile CA",
}


@pytest.mark.parametrize("label", HOSTILE_CA_SUBJECTS)
def test_a_hostile_ca_subject_is_refused_or_created_lint_clean(pki, label):
    """``ca create --subject``: refused with pkiq's own error, or a CA certificate that passes
    the RFC 5280 linter."""
    name = f"hostile-{label}"
    try:
        cas.create_ca(pki.ctx, name=name, subject=HOSTILE_CA_SUBJECTS[label],
                      key_type="ec-p256", days=365, passphrase=PASS)
    except PkiqError:
        return
    findings = lint_certificate(der(cas.show_ca(pki.ctx, name)[1]))
    assert errors(findings) == [], f"CA subject {label} was accepted: " + "; ".join(
        map(str, errors(findings)))


# ---------------------------------------------------------------- the linters bite

def _self_signed(subject: x509.Name, key, sans=()) -> bytes:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(T0).not_valid_after(T0 + dt.timedelta(days=30)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
    return der(builder.sign(key, hashes.SHA256()))


def test_the_linters_report_what_they_should():
    """The gate is wired to linters that find faults: a certificate pkilint cannot decode, a
    bad GeneralName, a pair whose signature does not verify, CRLs missing what RFC 5280
    requires."""
    key = ec.generate_private_key(ec.SECP256R1())
    name_ = x509.Name([_attr(NameOID.COMMON_NAME, "X")])
    too_long = x509.Name([_attr(NameOID.ORGANIZATION_NAME, "o" * 65)])
    assert "itu.invalid_asn1_syntax" in {
        f.code for f in errors(lint_certificate(_self_signed(too_long, key)))}
    bad_dns = _self_signed(name_, key, [x509.DNSName("x.example.com.")])
    assert "pkix.invalid_domain_name_syntax" in {f.code for f in lint_certificate(bad_dns)}
    other = _self_signed(name_, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert "pkix.signature_verification_failed" in {
        f.code for f in errors(lint_chain(other, _self_signed(name_, key)))}
    builder = (x509.CertificateRevocationListBuilder().issuer_name(name_).last_update(T0)
               .next_update(T0 + dt.timedelta(days=1)))
    assert {f.code for f in errors(lint_crl(der(builder.sign(key, hashes.SHA256()))))} == {
        "pkix.crl_number_missing", "pkix.authority_key_identifier_missing"}
