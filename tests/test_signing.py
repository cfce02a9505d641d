"""Signing requests: profiles, copy_extensions, validity, digests, Expressway rules."""

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.errors import BadSignature, CaExpired, PolicyViolation
from ca.issuance import CaUrls
from ca.policy import POLICY_MATCH

from .conftest import cached_key, guide_csr, make_csr
from .domain import new_ca, sign

DATA = Path(__file__).parent / "data"


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def test_guide_csr_der_sha1_is_accepted_and_signed_with_sha256(sessions, clock, tmp_path):
    new_ca(sessions, clock, key_type="rsa2048")
    csr = guide_csr(tmp_path).read_bytes()
    result = sign(sessions, clock, "Root", csr)
    cert = result.certificate
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [
        "cluster.example.com", "peer1.example.com", "peer2.example.com"]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert result.warnings == []


def test_a_csr_whose_signature_does_not_verify_is_refused(sessions, clock):
    new_ca(sessions, clock)
    der = bytearray(make_csr(der=True))
    der[-5] ^= 0x01  # flip a bit in the signature
    with pytest.raises(BadSignature):
        sign(sessions, clock, "Root", bytes(der))


def test_a_sha1_csr_with_a_bad_signature_is_refused(sessions, clock, tmp_path):
    new_ca(sessions, clock)
    der = bytearray(guide_csr(tmp_path).read_bytes())
    der[-5] ^= 0x01
    with pytest.raises(BadSignature):
        sign(sessions, clock, "Root", bytes(der))


@pytest.mark.parametrize("key_type, digest", [("rsa2048", hashes.SHA256),
                                              ("ec-p256", hashes.SHA256),
                                              ("ec-p384", hashes.SHA384)])
def test_pkiq_signs_with_sha256_or_stronger(sessions, clock, key_type, digest):
    ca, _ = new_ca(sessions, clock, key_type=key_type)
    assert isinstance(sign(sessions, clock, "Root", make_csr()).certificate
                      .signature_hash_algorithm, digest)


@pytest.mark.parametrize("profile, ekus", [
    ("webserver", [ExtendedKeyUsageOID.SERVER_AUTH]),
    ("webclientandserver", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
    ("client", [ExtendedKeyUsageOID.CLIENT_AUTH]),
])
def test_end_entity_profiles(sessions, clock, profile, ekus):
    new_ca(sessions, clock)
    cert = sign(sessions, clock, "Root", make_csr(), profile=profile).certificate
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == ekus
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = ext(cert, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign


def test_subca_profile_and_ca_key_identifiers(sessions, clock):
    root, signer = new_ca(sessions, clock)
    csr = make_csr("Example Issuing CA")
    cert = sign(sessions, clock, "Root", csr, profile="subca").certificate
    bc = ext(cert, x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    ku = ext(cert, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    root_cert = x509.load_der_x509_certificate(root.cert_der)
    assert (ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
            == ext(root_cert, x509.SubjectKeyIdentifier).value.digest)


def test_root_ca_certificate_shape(sessions, clock):
    root, _ = new_ca(sessions, clock, key_type="rsa2048")
    cert = x509.load_der_x509_certificate(root.cert_der)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert cert.issuer == cert.subject
    assert b"ENCRYPTED PRIVATE KEY" in root.key_pem.encode()


def test_profile_adds_crl_and_aia_urls_where_configured(sessions, clock):
    new_ca(sessions, clock, urls=CaUrls(crl=("http://pki.example.com/root.crl",),
                                        ca_issuers=("http://pki.example.com/root.cer",),
                                        ocsp=("http://ocsp.example.com",)))
    cert = sign(sessions, clock, "Root", make_csr()).certificate
    dp = ext(cert, x509.CRLDistributionPoints).value
    assert dp[0].full_name[0].value == "http://pki.example.com/root.crl"
    aia = {d.access_method._name: d.access_location.value
           for d in ext(cert, x509.AuthorityInformationAccess).value}
    assert aia == {"OCSP": "http://ocsp.example.com", "caIssuers": "http://pki.example.com/root.cer"}


def test_no_urls_no_url_extensions(sessions, clock):
    new_ca(sessions, clock)
    cert = sign(sessions, clock, "Root", make_csr()).certificate
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.CRLDistributionPoints)


# ---------------------------------------------------------------- copy_extensions

HOSTILE_EXTENSIONS = [
    (x509.BasicConstraints(ca=True, path_length=None), True),
    (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=True,
                   crl_sign=True, encipher_only=False, decipher_only=False), True),
    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
]


def _hostile_csr():
    return make_csr("h.example.com", sans=("h.example.com",), extensions=HOSTILE_EXTENSIONS)


def test_copy_none_ignores_request_extensions(sessions, clock):
    new_ca(sessions, clock, copy_extensions="none")
    cert = sign(sessions, clock, "Root", _hostile_csr()).certificate
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)


def test_copy_adds_what_the_profile_did_not_set(sessions, clock):
    new_ca(sessions, clock, copy_extensions="copy")
    result = sign(sessions, clock, "Root", _hostile_csr(), profile="webserver")
    cert = result.certificate
    assert ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [
        "h.example.com"]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert not ext(cert, x509.KeyUsage).value.key_cert_sign
    assert any("CA:TRUE" in w for w in result.warnings)


def test_copyall_copies_only_what_the_profile_allows_and_never_makes_a_ca(sessions, clock):
    new_ca(sessions, clock, copy_extensions="copyall")
    result = sign(sessions, clock, "Root", _hostile_csr())
    cert = result.certificate
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert ext(cert, x509.KeyUsage).critical and not ext(cert, x509.KeyUsage).value.key_cert_sign
    assert any("keyCertSign" in w and "codeSigning" in w for w in result.warnings)


# ---------------------------------------------------------------- validity

def test_validity_defaults_backdating_and_overrides(sessions, clock):
    new_ca(sessions, clock, default_days=200, profile_days={"client": 30})
    now = clock()
    cert = sign(sessions, clock, "Root", make_csr()).certificate
    assert cert.not_valid_before_utc == now - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == now + dt.timedelta(days=200)
    client = sign(sessions, clock, "Root", make_csr("c.example.com"), profile="client")
    assert client.certificate.not_valid_after_utc == now + dt.timedelta(days=30)
    explicit = sign(sessions, clock, "Root", make_csr("d.example.com"), days=7)
    assert explicit.certificate.not_valid_after_utc == now + dt.timedelta(days=7)


def test_clock_skew_margin_is_configurable(sessions, clock):
    new_ca(sessions, clock, clock_skew_seconds=0)
    cert = sign(sessions, clock, "Root", make_csr()).certificate
    assert cert.not_valid_before_utc == clock()


def test_validity_never_passes_the_ca_notafter(sessions, clock):
    ca, _ = new_ca(sessions, clock, days=100)
    result = sign(sessions, clock, "Root", make_csr(), days=365)
    assert result.certificate.not_valid_after_utc == ca.not_after
    assert any("notAfter" in w for w in result.warnings)


def test_an_expired_ca_signs_nothing(sessions, clock):
    new_ca(sessions, clock, days=10)
    clock.advance(days=11)
    with pytest.raises(CaExpired):
        sign(sessions, clock, "Root", make_csr())


# ---------------------------------------------------------------- Expressway rules

@pytest.mark.parametrize("cn, sans", [("*.example.com", ()),
                                      ("h.example.com", ("h.example.com", "*.example.com"))])
def test_wildcards_are_refused(sessions, clock, cn, sans):
    new_ca(sessions, clock)
    with pytest.raises(PolicyViolation, match="wildcard"):
        sign(sessions, clock, "Root", make_csr(cn, sans=sans))


def test_a_request_without_cn_is_refused(sessions, clock):
    new_ca(sessions, clock, policy=POLICY_MATCH.__class__("nocn", (("countryName", "optional"),
                                                                   ("commonName", "optional"))))
    with pytest.raises(PolicyViolation, match="commonName"):
        sign(sessions, clock, "Root", make_csr(None))


def test_rsa_below_2048_is_refused(sessions, clock):
    new_ca(sessions, clock)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PolicyViolation, match="2048"):
        sign(sessions, clock, "Root", make_csr(key=small))


def test_rsa_8192_is_signed_with_the_guide_warning(sessions, clock):
    new_ca(sessions, clock)
    key = serialization.load_pem_private_key((DATA / "rsa8192-test-only.key").read_bytes(), None)
    result = sign(sessions, clock, "Root", make_csr(key=key))
    assert any("8192" in w and "SIP TLS" in w for w in result.warnings)


def test_clustered_cn_and_sans_and_the_cn_missing_from_sans_warning(sessions, clock):
    new_ca(sessions, clock)
    ok = sign(sessions, clock, "Root", make_csr(
        "cluster.example.com", sans=("cluster.example.com", "peer1.example.com")))
    assert ok.warnings == []
    odd = sign(sessions, clock, "Root", make_csr("cluster2.example.com",
                                                 sans=("peer1.example.com",)))
    assert any("not among the SAN" in w for w in odd.warnings)


def test_long_san_list_warns(sessions, clock):
    new_ca(sessions, clock)
    sans = tuple(f"peer{i:03d}.video.example.com" for i in range(45))
    result = sign(sessions, clock, "Root", make_csr(sans[0], sans=sans))
    assert any("999" in w for w in result.warnings)


def test_invalid_dns_name_in_san_is_refused(sessions, clock):
    new_ca(sessions, clock)
    with pytest.raises(PolicyViolation, match="host name"):
        sign(sessions, clock, "Root", make_csr("h.example.com", sans=("bad name.example.com",)))


def test_ec_request_keys_get_no_key_encipherment(sessions, clock):
    new_ca(sessions, clock)
    cert = sign(sessions, clock, "Root", make_csr(key=cached_key("ec-p256"))).certificate
    ku = ext(cert, x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment


def test_policy_drops_unnamed_fields_in_issued_certificates(sessions, clock):
    new_ca(sessions, clock)
    csr = make_csr(extra_name={NameOID.TITLE: "admin"})
    cert = sign(sessions, clock, "Root", csr).certificate
    assert cert.subject.get_attributes_for_oid(NameOID.TITLE) == []


class CountingSigner:
    """Any ``ca.keys.Signer`` will do (an HSM or KMS later): this one only delegates."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def public_key(self):
        return self.inner.public_key()

    def sign_certificate(self, builder, digest=None):
        self.calls.append("certificate")
        return self.inner.sign_certificate(builder, digest)

    def sign_crl(self, builder):
        self.calls.append("crl")
        return self.inner.sign_crl(builder)


def test_any_signer_signs_certificates_sub_cas_and_crls(sessions, clock):
    from ca import authority
    from ca.names import parse_name
    from shell.db import transaction

    from .domain import PASS

    _ca, software = new_ca(sessions, clock)
    signer = CountingSigner(software)
    with transaction(sessions) as session:
        root = authority.get_ca(session, "Root")
        authority.create_ca(session, name="Sub", subject=parse_name("/CN=Sub CA"),
                            key_type="ec-p256", passphrase=PASS, now=clock(), parent=root,
                            parent_signer=signer)
        authority.sign_csr(session, root, signer, make_csr(), profile="webclientandserver",
                           now=clock())
        authority.generate_crl(session, root, signer, clock())
        authority.check_key_matches(signer, authority.ca_certificate(root), "Root")
    assert signer.calls == ["certificate", "certificate", "crl"]
