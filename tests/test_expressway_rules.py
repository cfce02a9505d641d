"""ca.expressway: the names of a node's certificate per deployment model and role, the key
and request pkiq makes for it, and the checks on a server certificate made elsewhere.
Encrypted keys and SHA-1 certificates come from the real ``openssl`` binary."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from ca.authority import check_request
from ca.csr import SAN_WARN_CHARS, load_csr
from ca.errors import BadInput, Conflict, PolicyViolation
from ca.expressway import (
    MODELS,
    NODE_KEY_TYPES,
    NodeProfile,
    build_node_csr,
    check_node_key_type,
    check_node_profile,
    csr_subject_and_sans,
    generate_node_key,
    san_warnings,
)
from ca.issuance import build_certificate
from ca.keys import SoftwareSigner
from ca.names import canonical_name, common_name, parse_name
from ca.profiles import get_profile
from ca.serials import random_serial
from ca.server_upload import (
    MAX_UPLOAD_BYTES,
    CheckedServerCertificate,
    check_server_certificate,
    check_server_upload,
    load_server_key,
)

from .conftest import T0, cached_key
from .test_pkilint import errors, lint_certificate

NODE = "expc1.example.com"
CLUSTER = "expc.example.com"
PEERS = ("expc2.example.com", "expc3.example.com")
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
ONE_DAY = dt.timedelta(days=1)


def dns(names) -> list[str]:
    return [n.value for n in names]


# ---------------------------------------------------------------- names per model and role


def test_standalone_node_has_its_fqdn_as_cn_and_as_san():
    subject, sans = csr_subject_and_sans(NodeProfile(NODE, "C"), organization="Example",
                                         unit="UC", locality="Leeds", state="Yorkshire",
                                         country="GB")
    assert subject.rfc4514_string() == f"CN={NODE},OU=UC,O=Example,L=Leeds,ST=Yorkshire,C=GB"
    assert dns(sans) == [NODE]


def test_per_peer_certificate_names_the_node_and_the_cluster_not_the_other_peers():
    p = NodeProfile(NODE, "C", "cluster-per-peer", CLUSTER, peers=PEERS)
    subject, sans = csr_subject_and_sans(p)
    assert common_name(subject) == NODE
    assert dns(sans) == [NODE, CLUSTER]


def test_shared_certificate_has_the_cluster_as_cn_and_lists_every_peer():
    p = NodeProfile(NODE, "E", "cluster-shared", CLUSTER, peers=PEERS)
    subject, sans = csr_subject_and_sans(p)
    assert common_name(subject) == CLUSTER
    assert dns(sans) == [CLUSTER, NODE, *PEERS]


def test_expressway_c_adds_chat_node_aliases_and_phone_security_profiles():
    p = NodeProfile(NODE, "C", chat_node_aliases=("chatroom1.example.com",),
                    phone_security_profiles=("secure-8861.example.com",
                                             "secure-7841.example.com"))
    assert dns(csr_subject_and_sans(p)[1]) == [NODE, "chatroom1.example.com",
                                               "secure-8861.example.com",
                                               "secure-7841.example.com"]


@pytest.mark.parametrize(("fmt", "expected"), [
    ("collab-edge", ["collab-edge.example.com", "collab-edge.example.org"]),
    ("domain", ["example.com", "example.org"]),
])
def test_expressway_e_adds_uc_domains_in_the_chosen_format(fmt, expected):
    p = NodeProfile("expe1.example.com", "E", chat_node_aliases=("chatroom1.example.com",),
                    uc_domains=("example.com", "example.org"), uc_domain_format=fmt)
    assert dns(csr_subject_and_sans(p)[1]) == ["expe1.example.com",
                                               "chatroom1.example.com", *expected]


def test_a_shared_certificate_lists_up_to_six_peers_the_node_included():
    peers = tuple(f"expc{i}.example.com" for i in range(1, 7))
    p = NodeProfile(NODE, "C", "cluster-shared", CLUSTER, peers=peers)
    assert dns(csr_subject_and_sans(p)[1]) == [CLUSTER, *peers]


def test_names_are_listed_once_whatever_their_case_in_first_order():
    p = NodeProfile(NODE, "C", "cluster-shared", CLUSTER,
                    peers=(NODE.upper(), PEERS[0], PEERS[0].upper()),
                    chat_node_aliases=(CLUSTER.upper(),))
    assert dns(csr_subject_and_sans(p)[1]) == [CLUSTER, NODE, PEERS[0]]


@pytest.mark.parametrize(("profile", "error", "words"), [
    (NodeProfile("*.example.com", "C"), PolicyViolation, "does not support wildcard"),
    (NodeProfile(NODE, "C", chat_node_aliases=("*.chat.example.com",)), PolicyViolation,
     "does not support wildcard"),
    (NodeProfile(NODE, "X"), BadInput, "is not C (Expressway-C) or E"),
    (NodeProfile(NODE, "C", "cluster"), BadInput, "choose one of standalone"),
    (NodeProfile(NODE, "E", uc_domain_format="srv"), BadInput, "collab-edge or domain"),
    (NodeProfile(NODE, "C", "cluster-per-peer"), PolicyViolation, "has no cluster FQDN"),
    (NodeProfile(NODE, "C", cluster_fqdn=CLUSTER), PolicyViolation, "is standalone"),
    (NodeProfile(NODE, "C", peers=PEERS), PolicyViolation, "is standalone"),
    (NodeProfile(NODE, "C", "cluster-shared", CLUSTER), PolicyViolation,
     "must list all possible peer FQDNs"),
    (NodeProfile(NODE, "C", "cluster-per-peer", NODE.upper()), PolicyViolation,
     "is the node's own FQDN"),
    (NodeProfile("expc1", "C"), PolicyViolation, "single label"),
    (NodeProfile(NODE, "C", "cluster-shared", CLUSTER,
                 peers=tuple(f"expc{i}.example.com" for i in range(2, 8))), PolicyViolation,
     "at most 6 peers"),
    (NodeProfile(NODE, "C", "cluster-per-peer", CLUSTER, peers=("exp c2.example.com",)),
     PolicyViolation, "not a valid host name"),
    (NodeProfile(NODE, "E", phone_security_profiles=("secure.example.com",)),
     PolicyViolation, "'Expressway-C server certificate requirements'"),
    (NodeProfile(NODE, "C", uc_domains=("example.com",)), PolicyViolation,
     "'Expressway-E server certificate requirements'"),
    (NodeProfile(NODE, "C", phone_security_profiles=("Cisco 8861 - Secure SIP",)),
     PolicyViolation, "not in FQDN format"),
    (NodeProfile(NODE, "C", phone_security_profiles=("securesip",)), PolicyViolation,
     "not in FQDN format"),
    (NodeProfile(NODE, "E", uc_domains=("exämple.com",)), PolicyViolation, "xn--"),
])
def test_profiles_expressway_cannot_use_are_refused(profile, error, words):
    with pytest.raises((PolicyViolation, BadInput)) as info:
        check_node_profile(profile)
    assert type(info.value) is error and words in str(info.value)


@pytest.mark.parametrize(("fields", "words"), [
    ({"country": "GBR"}, "two-letter"),
    ({"country": "gb"}, "two-letter"),
    ({"organization": "x" * 65}, "at most 64"),
    ({"unit": "a\u202eb"}, "invisible formatting"),
])
def test_subject_fields_are_checked_as_every_issued_name(fields, words):
    with pytest.raises(BadInput, match=words):
        csr_subject_and_sans(NodeProfile(NODE, "C"), **fields)


def test_a_long_san_list_is_warned_about_as_expressway_does():
    aliases = tuple(f"chat-node-alias-{i:03d}.im.example.com" for i in range(40))
    _, sans = csr_subject_and_sans(NodeProfile(NODE, "C", chat_node_aliases=aliases))
    [warning] = san_warnings(sans)
    assert f"Expressway warns past {SAN_WARN_CHARS}" in warning
    assert san_warnings(csr_subject_and_sans(NodeProfile(NODE, "C"))[1]) == []


# ---------------------------------------------------------------- keys and requests


def test_rsa8192_is_refused_with_the_guides_reason():
    with pytest.raises(PolicyViolation, match="SIP TLS zones may fail to become active"):
        check_node_key_type("rsa8192")


@pytest.mark.parametrize("kind", ["ec-p256", "rsa1024", "rsa3072", ""])
def test_other_key_types_are_refused_naming_the_allowed_ones(kind):
    with pytest.raises(BadInput, match="choose one of rsa2048, rsa4096"):
        check_node_key_type(kind)


def test_node_keys_are_rsa_of_the_size_asked():
    assert NODE_KEY_TYPES == ("rsa2048", "rsa4096")
    assert generate_node_key("rsa4096").key_size == 4096  # the one RSA-4096 of this module
    with pytest.raises(PolicyViolation):
        generate_node_key("rsa8192")


def _sans_of(csr) -> list[str]:
    return csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("model", MODELS)
def test_node_request_passes_pkiqs_own_checks_and_openssl(model, tmp_path):
    p = NodeProfile(NODE, "C", model, None if model == "standalone" else CLUSTER,
                    PEERS if model == "cluster-shared" else (),
                    chat_node_aliases=("chatroom1.example.com",))
    csr = build_node_csr(p, cached_key("rsa2048"), organization="Example", country="GB")
    pem = csr.public_bytes(PEM)
    loaded = load_csr(pem)
    assert isinstance(loaded.signature_hash_algorithm, hashes.SHA256)
    assert _sans_of(loaded) == dns(csr_subject_and_sans(p)[1])
    usages = loaded.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    key_usage = loaded.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical and key_usage.value.digital_signature
    assert key_usage.value.key_encipherment
    requested, warnings = check_request(loaded, get_profile("webclientandserver"), "copy",
                                        canonical_name(loaded.subject))
    assert warnings == []
    assert [list(ext) for ext, _ in requested] == [list(csr.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value)]
    path = tmp_path / "node.csr"
    path.write_bytes(pem)
    done = subprocess.run(["openssl", "req", "-verify", "-noout", "-in", str(path)],
                          capture_output=True, text=True, check=True)
    assert "verify OK" in done.stdout + done.stderr


def test_node_request_signed_by_pkiq_lints_clean_and_uploads_without_warnings():
    """The whole round: pkiq makes the node's request, its own CA signs it with the
    Expressway profile, pkilint finds no RFC 5280 error, and the upload for the CSR in
    progress (its key pending) is accepted with nothing to warn about."""
    ca_key, node_key = cached_key("ec-p256"), cached_key("rsa2048")
    root = build_certificate(
        signer=SoftwareSigner(ca_key), issuer_cert=None, subject=parse_name("/O=Example/CN=Root"),
        public_key=ca_key.public_key(), serial=random_serial(), not_before=T0 - ONE_DAY,
        not_after=T0 + 3650 * ONE_DAY, profile=get_profile("subca")).certificate
    p = NodeProfile("expe1.example.com", "E", "cluster-per-peer", "expe.example.com",
                    chat_node_aliases=("chatroom1.example.com",), uc_domains=("example.com",))
    csr = load_csr(build_node_csr(p, node_key, organization="Example").public_bytes(PEM))
    profile = get_profile("webclientandserver")
    requested, _ = check_request(csr, profile, "copy", canonical_name(csr.subject))
    cert = build_certificate(
        signer=SoftwareSigner(ca_key), issuer_cert=root, subject=canonical_name(csr.subject),
        public_key=csr.public_key(), serial=random_serial(), not_before=T0 - ONE_DAY,
        not_after=T0 + 365 * ONE_DAY, profile=profile, requested=requested).certificate
    assert errors(lint_certificate(cert.public_bytes(DER))) == []
    checked = check_server_upload(cert.public_bytes(PEM), None, node_fqdn="expe1.example.com",
                                  csr_in_progress=True, now=T0, pending_key=node_key,
                                  trusted=[root])
    assert checked.warnings == () and checked.certificate == cert
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == ["expe1.example.com", "expe.example.com",
                                               "chatroom1.example.com",
                                               "collab-edge.example.com"]


def test_ec_node_request_asks_no_key_encipherment():
    csr = load_csr(build_node_csr(NodeProfile(NODE, "E"), cached_key("ec-p256"))
                   .public_bytes(DER))
    assert not csr.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


@pytest.mark.parametrize(("key", "words"), [
    (rsa.generate_private_key(65537, 1024), "use 2048 bits or more"),
    (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
])
def test_node_requests_refuse_keys_expressway_cannot_use(key, words):
    with pytest.raises(PolicyViolation, match=words):
        build_node_csr(NodeProfile(NODE, "C"), key)


# ---------------------------------------------------------------- uploads: set-up


class Ca:
    def __init__(self, name="Test Issuing CA", key=None):
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(T0 - 10 * ONE_DAY).not_valid_after(T0 + 3650 * ONE_DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, public_key, cn: str | None = NODE, sans=(NODE,), *, days=365,
              not_before=None, usages=(ExtendedKeyUsageOID.SERVER_AUTH,
                                       ExtendedKeyUsageOID.CLIENT_AUTH)):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
        start = not_before or T0 - ONE_DAY
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(start + days * ONE_DAY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), True))
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), False)
        if usages is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), False)
        return builder.sign(self.key, hashes.SHA256())


@pytest.fixture(scope="module")
def ca():
    return Ca()


@pytest.fixture(scope="module")
def node_key():
    return cached_key("rsa2048")


@pytest.fixture(scope="module")
def leaf(ca, node_key):
    return ca.issue(node_key.public_key())


def key_bytes(key, encoding=PEM, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(encoding, fmt, serialization.NoEncryption())


def upload(ca, cert_data, key_data=None, *, csr_in_progress=False, pending_key=None,
           node=NODE, now=T0):
    return check_server_upload(cert_data, key_data, node_fqdn=node,
                               csr_in_progress=csr_in_progress, now=now,
                               pending_key=pending_key, trusted=[ca.cert])


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


# ---------------------------------------------------------------- uploads: accepted


def test_pem_certificate_and_pkcs8_key_are_accepted_without_warnings(ca, leaf, node_key):
    checked = upload(ca, leaf.public_bytes(PEM), key_bytes(node_key))
    assert isinstance(checked, CheckedServerCertificate)
    assert checked.certificate == leaf and checked.chain == ()
    assert checked.private_key.public_key() == node_key.public_key()
    assert checked.warnings == ()


def test_der_certificate_and_der_keys_are_accepted(ca, leaf, node_key):
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        checked = upload(ca, leaf.public_bytes(DER), key_bytes(node_key, DER, fmt))
        assert checked.certificate == leaf and checked.warnings == ()


def test_pkcs1_and_sec1_keys_are_read(ca, node_key):
    pkcs1 = key_bytes(node_key, fmt=serialization.PrivateFormat.TraditionalOpenSSL)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert load_server_key(pkcs1).public_key() == node_key.public_key()
    ec_key = cached_key("ec-p256")
    sec1 = key_bytes(ec_key, fmt=serialization.PrivateFormat.TraditionalOpenSSL)
    assert sec1.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    checked = upload(ca, ca.issue(ec_key.public_key()).public_bytes(PEM), sec1)
    assert checked.private_key.public_key() == ec_key.public_key()


def test_openssl_ec_key_with_parameters_block_is_read(tmp_path, ca):
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-out", "ec.key", cwd=tmp_path)
    data = (tmp_path / "ec.key").read_bytes()
    assert b"EC PARAMETERS" in data
    key = load_server_key(data)
    assert upload(ca, ca.issue(key.public_key()).public_bytes(PEM), data).warnings == ()


def test_the_leaf_is_the_first_non_ca_certificate_the_rest_is_the_chain(ca, leaf, node_key):
    data = ca.cert.public_bytes(PEM) + b"text between blocks\n" + leaf.public_bytes(PEM)
    checked = upload(ca, data, key_bytes(node_key))
    assert checked.certificate == leaf and checked.chain == (ca.cert,)


def test_certificate_for_the_pending_request_needs_no_key(ca, leaf, node_key):
    checked = upload(ca, leaf.public_bytes(PEM), None, csr_in_progress=True,
                     pending_key=node_key)
    assert checked.private_key is None and checked.certificate == leaf


# ---------------------------------------------------------------- uploads: refused


def test_encrypted_keys_made_by_openssl_are_refused_in_the_guides_words(tmp_path, ca, leaf):
    openssl("genrsa", "-aes256", "-traditional", "-passout", "pass:secret-pass",
            "-out", "legacy.key", "2048", cwd=tmp_path)
    openssl("genrsa", "-out", "clear.key", "2048", cwd=tmp_path)
    openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "clear.key", "-passout",
            "pass:secret-pass", "-out", "pkcs8.key", cwd=tmp_path)
    openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "clear.key", "-passout",
            "pass:secret-pass", "-outform", "DER", "-out", "pkcs8.der", cwd=tmp_path)
    assert b"Proc-Type: 4,ENCRYPTED" in (tmp_path / "legacy.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "pkcs8.key").read_bytes()
    for name in ("legacy.key", "pkcs8.key", "pkcs8.der"):
        with pytest.raises(PolicyViolation, match="must not be password protected"):
            upload(ca, leaf.public_bytes(PEM), (tmp_path / name).read_bytes())


def test_a_key_cannot_be_uploaded_while_a_request_is_in_progress(ca, leaf, node_key):
    with pytest.raises(Conflict, match="You cannot upload a server private key if a "
                                       "certificate signing request is in progress"):
        upload(ca, leaf.public_bytes(PEM), key_bytes(node_key), csr_in_progress=True,
               pending_key=node_key)


def test_a_key_that_does_not_match_is_refused_naming_the_wrong_peer(ca, leaf):
    other = cached_key("ec-p256")
    with pytest.raises(PolicyViolation, match="uploaded to the appropriate peer") as info:
        upload(ca, leaf.public_bytes(PEM), key_bytes(other))
    assert info.value.rule == "key-match" and "uploaded private key" in str(info.value)
    with pytest.raises(PolicyViolation, match="the key of the CSR made for"):
        upload(ca, leaf.public_bytes(PEM), None, csr_in_progress=True, pending_key=other)


def test_no_key_and_none_pending_is_refused(ca, leaf):
    with pytest.raises(PolicyViolation, match="no private key"):
        upload(ca, leaf.public_bytes(PEM), None)


@pytest.mark.parametrize(("cn", "sans"), [
    ("*.example.com", (NODE,)),
    (NODE, (NODE, "*.example.com")),
])
def test_wildcard_names_are_refused(ca, node_key, cn, sans):
    cert = ca.issue(node_key.public_key(), cn, sans)
    with pytest.raises(PolicyViolation, match="does not support wildcard"):
        upload(ca, cert.public_bytes(PEM), key_bytes(node_key))


def test_a_ca_certificate_is_not_a_server_certificate(ca):
    with pytest.raises(PolicyViolation, match="only CA certificates"):
        upload(ca, ca.cert.public_bytes(PEM), key_bytes(ca.key))


def test_an_expired_certificate_is_refused(ca, node_key):
    cert = ca.issue(node_key.public_key(), days=30, not_before=T0 - 40 * ONE_DAY)
    with pytest.raises(PolicyViolation, match="expired on"):
        upload(ca, cert.public_bytes(PEM), key_bytes(node_key))


@pytest.mark.parametrize(("key", "words"), [
    (rsa.generate_private_key(65537, 1024), "RSA 1024-bit key is refused"),
    (ed25519.Ed25519PrivateKey.generate(), "EdDSA (Ed25519)"),
    (ec.generate_private_key(ec.SECP256K1()), "Expressway cannot use"),
])
def test_keys_expressway_cannot_use_are_refused(ca, key, words):
    cert = ca.issue(key.public_key())
    with pytest.raises(PolicyViolation) as info:
        upload(ca, cert.public_bytes(PEM), key_bytes(key))
    assert words in str(info.value)


def test_inputs_over_one_mib_are_refused_unread(ca, leaf, node_key):
    big = leaf.public_bytes(PEM) + b"\n" * MAX_UPLOAD_BYTES
    with pytest.raises(BadInput, match="server certificate file is .* at most 1,048,576"):
        upload(ca, big, key_bytes(node_key))
    with pytest.raises(BadInput, match="private key file is"):
        upload(ca, leaf.public_bytes(PEM), key_bytes(node_key) + b" " * MAX_UPLOAD_BYTES)


def _csr_pem(node_key) -> bytes:
    return build_node_csr(NodeProfile(NODE, "C"), node_key).public_bytes(PEM)


def _crl(ca, encoding) -> bytes:
    return (x509.CertificateRevocationListBuilder().issuer_name(ca.name)
            .last_update(T0).next_update(T0 + ONE_DAY).sign(ca.key, hashes.SHA256())
            .public_bytes(encoding))


def _bad_key_usage(ca, encoding) -> bytes:
    """A certificate whose keyUsage extension holds two bytes that are no BIT STRING."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.name)
            .public_key(cached_key("ec-p256").public_key()).serial_number(1)
            .not_valid_before(T0).not_valid_after(T0 + ONE_DAY)
            .add_extension(x509.UnrecognizedExtension(ExtensionOID.KEY_USAGE, b"\x01\x02"),
                           True)
            .sign(ca.key, hashes.SHA256()).public_bytes(encoding))


@pytest.mark.parametrize(("make", "words"), [
    (lambda ca, leaf, key: _bad_key_usage(ca, DER),
     "the certificate carries a malformed extension"),
    (lambda ca, leaf, key: _bad_key_usage(ca, PEM),
     "PEM block #1 of the server certificate file carries a malformed extension"),
    (lambda ca, leaf, key: b"\x00\x01garbage bytes" * 10, "neither PEM nor a DER certificate"),
    (lambda ca, leaf, key: b"\n", "the server certificate file is empty"),
    (lambda ca, leaf, key: b"-----BEGIN is all there is", "has no complete PEM block"),
    (lambda ca, leaf, key: key_bytes(key, DER), "file is a private key; upload the"),
    (lambda ca, leaf, key: leaf.public_bytes(PEM)[:300], "no '-----END CERTIFICATE-----' line"),
    (lambda ca, leaf, key: leaf.public_bytes(DER)[:300], "neither PEM nor a DER certificate"),
    (lambda ca, leaf, key: _csr_pem(key), "certificate request: have the CA sign it"),
    (lambda ca, leaf, key: load_csr(_csr_pem(key)).public_bytes(DER),
     "a certificate request (CSR)"),
    (lambda ca, leaf, key: _crl(ca, DER), "is a CRL"),
    (lambda ca, leaf, key: _crl(ca, PEM), "'X509 CRL' block"),
    (lambda ca, leaf, key: leaf.public_bytes(PEM) + key_bytes(key), "upload it as the key"),
    (lambda ca, leaf, key: b"-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n",
     "PEM block #1 of the server certificate file is not a readable X.509 certificate"),
    (lambda ca, leaf, key: b"-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----",
     "not valid base64"),
])
def test_what_is_not_a_certificate_gets_one_clear_message(ca, leaf, node_key, make, words):
    with pytest.raises(BadInput) as info:
        upload(ca, make(ca, leaf, node_key), key_bytes(node_key))
    assert words in str(info.value)


@pytest.mark.parametrize(("make", "words"), [
    (lambda ca, leaf, key: b"\x00garbage", "not a private key pkiq can read"),
    (lambda ca, leaf, key: _crl(ca, DER), "is a CRL"),
    (lambda ca, leaf, key: _crl(ca, PEM), "holds a 'X509 CRL' block, not a private key"),
    (lambda ca, leaf, key: leaf.public_bytes(PEM), "holds a 'CERTIFICATE' block"),
    (lambda ca, leaf, key: leaf.public_bytes(DER), "the private key file is a certificate"),
    (lambda ca, leaf, key: b" \n", "the private key file is empty"),
    (lambda ca, leaf, key: key_bytes(key)[:200], "no '-----END PRIVATE KEY-----' line"),
    (lambda ca, leaf, key: key_bytes(key) * 2, "holds 2 private keys"),
    (lambda ca, leaf, key: b"-----BEGIN PRIVATE KEY-----\nMIIBAA==\n-----END PRIVATE KEY-----\n",
     "not a private key pkiq can read"),
])
def test_what_is_not_a_key_gets_one_clear_message(ca, leaf, node_key, make, words):
    with pytest.raises(BadInput) as info:
        upload(ca, leaf.public_bytes(PEM), make(ca, leaf, node_key))
    assert words in str(info.value)


# ---------------------------------------------------------------- uploads: warnings


def _warnings(ca, cert, key) -> list[str]:
    return list(upload(ca, cert.public_bytes(PEM), key_bytes(key)).warnings)


def test_cn_missing_from_the_sans_is_warned_about(ca, node_key):
    [warning] = _warnings(ca, ca.issue(node_key.public_key(), NODE, (CLUSTER,)), node_key)
    assert f"CN {NODE} is not among the SAN DNS names" in warning


def test_a_certificate_for_another_peer_is_warned_about(ca, node_key):
    cert = ca.issue(node_key.public_key(), PEERS[0], (PEERS[0], CLUSTER))
    [warning] = _warnings(ca, cert, node_key)
    assert f"{NODE} is in neither the CN nor the SAN" in warning


def test_the_node_named_as_a_san_of_a_shared_certificate_is_enough(ca, node_key):
    cert = ca.issue(node_key.public_key(), CLUSTER, (CLUSTER, NODE, *PEERS))
    assert _warnings(ca, cert, node_key) == []


def test_a_certificate_without_san_is_warned_about(ca, node_key):
    [warning] = _warnings(ca, ca.issue(node_key.public_key(), NODE, ()), node_key)
    assert "no DNS subjectAltName" in warning and "fall back to the CN" in warning


def test_a_certificate_without_cn_is_warned_about(ca, node_key):
    [warning] = _warnings(ca, ca.issue(node_key.public_key(), None, (NODE,)), node_key)
    assert "no commonName" in warning


def test_an_untrusted_issuer_is_warned_about(node_key):
    other, trusted = Ca("Other CA"), Ca("Other CA")  # same name, another key: not its issuer
    checked = check_server_upload(other.issue(node_key.public_key()).public_bytes(PEM),
                                  key_bytes(node_key), node_fqdn=NODE, csr_in_progress=False,
                                  now=T0, trusted=[trusted.cert])
    [warning] = checked.warnings
    assert "(CN=Other CA) is not in the trusted CA list" in warning


def test_the_issuer_is_matched_by_name_as_rfc_5280_compares_names(ca, node_key):
    """RFC 5280 7.1: case and spacing aside, and the CA's key signed it: trusted."""
    renamed = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                           "test  issuing CA")]))
               .issuer_name(ca.name).public_key(ca.key.public_key()).serial_number(7)
               .not_valid_before(T0 - ONE_DAY).not_valid_after(T0 + 365 * ONE_DAY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
               .sign(ca.key, hashes.SHA256()))
    checked = check_server_upload(ca.issue(node_key.public_key()).public_bytes(PEM),
                                  key_bytes(node_key), node_fqdn=NODE, csr_in_progress=False,
                                  now=T0, trusted=[renamed])
    assert checked.warnings == ()


@pytest.mark.parametrize(("usages", "words"), [
    ((ExtendedKeyUsageOID.SERVER_AUTH,), ["no clientAuth", "Webclientandserver"]),
    ((ExtendedKeyUsageOID.CLIENT_AUTH,), ["no serverAuth"]),
])
def test_missing_tls_usages_are_warned_about(ca, node_key, usages, words):
    [warning] = _warnings(ca, ca.issue(node_key.public_key(), usages=usages), node_key)
    assert all(w in warning for w in words)


def test_no_extended_key_usage_at_all_allows_every_use(ca, node_key):
    assert _warnings(ca, ca.issue(node_key.public_key(), usages=None), node_key) == []


def test_expiry_within_30_days_and_future_start_are_warned_about(ca, node_key):
    [soon] = _warnings(ca, ca.issue(node_key.public_key(), days=20), node_key)
    assert "within 30 days" in soon
    [early] = _warnings(ca, ca.issue(node_key.public_key(), not_before=T0 + ONE_DAY),
                        node_key)
    assert "not valid until" in early


def test_a_sha1_certificate_signed_by_openssl_is_warned_about_and_still_trusted(tmp_path):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-subj", "/CN=Old SHA-1 CA", "-days", "30", cwd=tmp_path)
    openssl("genrsa", "-out", "node.key", "2048", cwd=tmp_path)
    openssl("req", "-new", "-key", "node.key", "-subj", f"/CN={NODE}", "-addext",
            f"subjectAltName=DNS:{NODE}", "-out", "node.csr", cwd=tmp_path)
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-sha1", "-days", "20", "-copy_extensions", "copy", "-out", "node.pem",
            cwd=tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "node.pem").read_bytes())
    ca_cert = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA1)
    now = cert.not_valid_before_utc + ONE_DAY
    warnings = check_server_upload((tmp_path / "node.pem").read_bytes(),
                                   (tmp_path / "node.key").read_bytes(), node_fqdn=NODE,
                                   csr_in_progress=False, now=now, trusted=[ca_cert]).warnings
    assert len(warnings) == 2  # SHA-1, and expiry within 30 days: trusted, CN among SANs
    assert "signed with SHA-1" in warnings[1] and "re-issue" in warnings[1]


def test_an_8192_bit_key_is_warned_about_with_the_guides_reason(ca):
    # The certificate's rules are checked on the public key alone, so an 8192-bit modulus
    # need not come from a real (slow to generate) key pair: only its size is looked at.
    modulus = (1 << 8191) + 2**4000 + 1
    public_key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    [warning] = check_server_certificate(ca.issue(public_key), NODE, now=T0, trusted=[ca.cert])
    assert "SIP TLS zones may fail to become active" in warning and "rsa4096" in warning
    too_big = rsa.RSAPublicNumbers(65537, (1 << 8199) + 1).public_key()
    with pytest.raises(PolicyViolation, match="RSA 8200-bit key is refused"):
        check_server_certificate(ca.issue(too_big), NODE, now=T0)
