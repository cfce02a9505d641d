"""A small real PKI for the store tests: root, intermediate, a node's leaf and key, a
revoked leaf, and each CA's CRL, built with pyca (EC keys: fast) and checked by openssl."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

T0 = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)


def name(*pairs: tuple) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    revoked: list[int] = field(default_factory=list)

    def crl(self, number: int = 1, this_update: dt.datetime = T0, *,
            idp_url: str | None = None) -> bytes:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(this_update).next_update(this_update + dt.timedelta(days=7))
                   .add_extension(x509.CRLNumber(number), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False))
        if idp_url is not None:
            builder = builder.add_extension(x509.IssuingDistributionPoint(
                full_name=[x509.UniformResourceIdentifier(idp_url)], relative_name=None,
                only_contains_user_certs=False, only_contains_ca_certs=False,
                only_some_reasons=None, indirect_crl=False,
                only_contains_attribute_certs=False), critical=True)
        for serial in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(this_update - dt.timedelta(hours=1)).build())
        return builder.sign(self.key, hashes.SHA256()).public_bytes(
            serialization.Encoding.DER)


def make_ca(subject: x509.Name, parent: Ca | None = None, key=None) -> Ca:
    key = key or ec.generate_private_key(ec.SECP256R1())
    issuer_key = parent.key if parent else key
    builder = _builder(subject, parent.cert.subject if parent else subject, key,
                       issuer_key).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
        x509.KeyUsage(digital_signature=True, content_commitment=False,
                      key_encipherment=False, data_encipherment=False, key_agreement=False,
                      key_cert_sign=True, crl_sign=True, encipher_only=False,
                      decipher_only=False), critical=True)
    return Ca(key, builder.sign(issuer_key, hashes.SHA256()))


def make_leaf(ca: Ca, host: str, key=None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(name((NameOID.ORGANIZATION_NAME, "Example"),
                          (NameOID.COMMON_NAME, host)), ca.cert.subject, key, ca.key)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca.key, hashes.SHA256()))
    return cert, key


def _builder(subject, issuer, key, issuer_key) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(T0 - dt.timedelta(days=1))
            .not_valid_after(T0 + dt.timedelta(days=365))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), False))


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Pki:
    root: Ca
    intermediate: Ca
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    revoked_leaf: x509.Certificate
    crl_pair: tuple[bytes, bytes]  # root's CRL 3, intermediate's CRL 7 (made once: ECDSA
    # signatures differ at each signing)

    def crls(self) -> tuple[bytes, bytes]:
        return self.crl_pair


@cache
def pki() -> Pki:
    """One PKI for the session: the intermediate has revoked ``revoked_leaf``."""
    root = make_ca(name((NameOID.ORGANIZATION_NAME, "Example"),
                        (NameOID.COMMON_NAME, "Store Root CA")))
    intermediate = make_ca(name((NameOID.ORGANIZATION_NAME, "Example"),
                                (NameOID.COMMON_NAME, "Store Issuing CA")), root)
    leaf, leaf_key = make_leaf(intermediate, "expe1.example.com")
    revoked_leaf, _ = make_leaf(intermediate, "expe2.example.com")
    intermediate.revoked.append(revoked_leaf.serial_number)
    return Pki(root, intermediate, leaf, leaf_key, revoked_leaf,
               (root.crl(number=3), intermediate.crl(number=7)))
