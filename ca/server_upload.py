"""A server certificate made elsewhere (Microsoft CA, a third party), and perhaps its key,
checked as the guide's "Loading a server certificate and private key onto Expressway" and
Expressway's upload page check them, before it is stored for a node: refusals for what
cannot work, warnings where Expressway warns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from .csr import MAX_RSA_BITS
from .encoding import EncodingError, pem_blocks
from .errors import BadInput, Conflict, PolicyViolation
from .expressway import SIP_TLS_8192, san_warnings
from .keys import describe_key
from .names import common_name
from .trust import is_ca, name_key

MAX_UPLOAD_BYTES = 1 << 20
EXPIRY_WARN_DAYS = 30
_CERT_LABELS = ("CERTIFICATE", "X509 CERTIFICATE")
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
_ENCRYPTED = ("the server private key must not be password protected (guide, 'Loading a "
              "server certificate and private key onto Expressway'); decrypt it first: "
              "openssl pkey -in key.pem -out key-clear.pem")


@dataclass(frozen=True)
class CheckedServerCertificate:
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # the other certificates of the uploaded file
    private_key: object | None  # the uploaded key; None when the pending one is used
    warnings: tuple[str, ...]


def check_server_upload(cert_data: bytes, key_data: bytes | None, *, node_fqdn: str,
                        csr_in_progress: bool, now: dt.datetime, pending_key=None,
                        trusted: Sequence[x509.Certificate] = ()) -> CheckedServerCertificate:
    """A server certificate (and perhaps its key) made elsewhere, checked as the guide's
    "Loading a server certificate and private key onto Expressway" and Expressway's upload
    page do: refusals for what cannot work, warnings where Expressway warns. The key must be
    the uploaded one, or else ``pending_key`` (the key of this node's CSR in progress)."""
    _check_size(cert_data, "server certificate file")
    if key_data is not None:
        _check_size(key_data, "private key file")
        if csr_in_progress:
            raise Conflict(f"a certificate signing request is in progress for {node_fqdn}, "
                           "and the guide says 'You cannot upload a server private key if a "
                           "certificate signing request is in progress'; upload the "
                           "certificate alone (it is matched to the request's key) or "
                           "discard the request first")
    leaf, chain = load_server_certificates(cert_data)
    warnings = check_server_certificate(leaf, node_fqdn, now=now, trusted=trusted)
    if key_data is not None:
        private_key = load_server_key(key_data)
        _check_match(leaf, private_key, node_fqdn, "the uploaded private key")
    elif pending_key is not None:
        private_key = None
        _check_match(leaf, pending_key, node_fqdn, f"the key of the CSR made for {node_fqdn}")
    else:
        raise PolicyViolation(f"no private key: no certificate signing request is pending for "
                              f"{node_fqdn}, so upload the private key the certificate was "
                              "issued for (unencrypted PEM)", "privateKey", "required")
    return CheckedServerCertificate(leaf, chain, private_key, tuple(warnings))


def _check_size(data: bytes, what: str) -> None:
    if not data.strip():
        raise BadInput(f"the {what} is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadInput(f"the {what} is {len(data):,} bytes; pkiq reads at most "
                       f"{MAX_UPLOAD_BYTES:,} (1 MiB)")


def load_server_certificates(data: bytes) -> tuple[x509.Certificate,
                                                    tuple[x509.Certificate, ...]]:
    """(leaf, the rest) from PEM (the leaf perhaps followed by its chain) or one DER
    certificate; the leaf is the first certificate that is not a CA's."""
    if b"-----BEGIN" in data:
        certs = []
        try:
            for number, block in enumerate(pem_blocks(data, max_blocks=100), 1):
                if block.label not in _CERT_LABELS:
                    raise BadInput(f"the server certificate file holds {_pem_what(block.label)}"
                                   f"{_pem_hint(block.label)}; upload the certificate the CA "
                                   "issued (PEM 'CERTIFICATE', its chain after it if any)")
                certs.append(_certificate(block.der, f"PEM block #{number}"))
        except EncodingError as exc:
            raise BadInput(f"the server certificate file cannot be read: {exc}") from None
        if not certs:
            raise BadInput("the server certificate file has no complete PEM block; upload "
                           "the certificate the CA issued (PEM or DER)")
    else:
        certs = [_certificate(data, None)]
    leaf = next((c for c in certs if not is_ca(c)), None)
    if leaf is None:
        raise PolicyViolation("the server certificate file holds only CA certificates "
                              "(basicConstraints CA:TRUE); upload the node's own certificate, "
                              "and CA certificates to the trusted CA list", "certificate",
                              "not-ca")
    return leaf, tuple(c for c in certs if c is not leaf)


def _certificate(der: bytes, where: str | None) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, UnsupportedAlgorithm):
        cert = None
    if cert is not None:
        try:
            cert.extensions  # noqa: B018 -- parse them now, so a bad one fails here
        except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:
            what = f"{where} of the server certificate file" if where else "the certificate"
            raise BadInput(f"{what} carries a malformed extension ({exc}); have the CA issue "
                           "it again") from None
        return cert
    found = _der_what(der) or "neither PEM nor a DER certificate"
    if where is None:
        raise BadInput(f"the server certificate file is {found}; upload the certificate the "
                       "CA issued (PEM or DER)")
    raise BadInput(f"{where} of the server certificate file is not a readable X.509 "
                   "certificate")


def _der_what(der: bytes) -> str | None:
    """What a DER blob that is not the expected thing is, for the message."""
    for loader, what in ((x509.load_der_x509_certificate, "a certificate"),
                         (x509.load_der_x509_csr, "a certificate request (CSR)"),
                         (x509.load_der_x509_crl, "a CRL")):
        try:
            loader(der)
            return what
        except (ValueError, UnsupportedAlgorithm):
            continue
    try:
        serialization.load_der_private_key(der, None)
        return "a private key"
    except TypeError:
        return "an encrypted private key"
    except (ValueError, UnsupportedAlgorithm):
        return None


def _pem_what(label: str) -> str:
    return f"a '{label}' block" if label else "a PEM block without a label"


def _pem_hint(label: str) -> str:
    if "REQUEST" in label:
        return " (a certificate request: have the CA sign it and upload what it returns)"
    if "PRIVATE KEY" in label:
        return " (a private key: upload it as the key, in a file of its own)"
    return ""


def load_server_key(data: bytes):
    """An unencrypted private key: PEM (PKCS#8, PKCS#1 RSA, SEC1 EC) or DER of the same."""
    if b"-----BEGIN" in data:
        if b"Proc-Type: 4,ENCRYPTED" in data:  # OpenSSL's legacy encrypted PEM (RFC 1421)
            raise PolicyViolation(_ENCRYPTED, "privateKey", "not-encrypted")
        try:
            blocks = [b for b in pem_blocks(data, max_blocks=16) if b.label != "EC PARAMETERS"]
        except EncodingError as exc:
            raise BadInput(f"the private key file cannot be read: {exc}") from None
        if any(b.label == "ENCRYPTED PRIVATE KEY" for b in blocks):
            raise PolicyViolation(_ENCRYPTED, "privateKey", "not-encrypted")
        keys = [b for b in blocks if b.label in _KEY_LABELS]
        if not keys:
            raise BadInput(f"the private key file holds {_pem_what(blocks[0].label)}, not a "
                           "private key (PEM 'PRIVATE KEY', 'RSA PRIVATE KEY' or "
                           "'EC PRIVATE KEY')" if blocks else
                           "the private key file has no complete PEM block")
        if len(keys) > 1:
            raise BadInput(f"the private key file holds {len(keys)} private keys; upload the "
                           "one the certificate was issued for")
        der = keys[0].der
    else:
        der = data
    try:
        return serialization.load_der_private_key(der, None)
    except TypeError:  # PKCS#8 EncryptedPrivateKeyInfo, in DER
        raise PolicyViolation(_ENCRYPTED, "privateKey", "not-encrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        pass
    found = _der_what(der) if der is data else None
    raise BadInput(f"the private key file is {found or 'not a private key pkiq can read'}; "
                   "expected an unencrypted PEM or DER key (PKCS#8, PKCS#1 RSA or SEC1 EC)")


def _check_match(cert: x509.Certificate, private_key, node_fqdn: str, what: str) -> None:
    if private_key.public_key() != cert.public_key():
        raise PolicyViolation(
            f"the certificate does not match {what}: was it issued for another peer? (guide: "
            "'You must ensure that the correct server certificate is uploaded to the "
            "appropriate peer, otherwise the stored private key on each peer will not "
            f"correspond to the uploaded certificate'); upload {node_fqdn}'s own certificate",
            "privateKey", "key-match")


def check_server_certificate(cert: x509.Certificate, node_fqdn: str, *, now: dt.datetime,
                             trusted: Sequence[x509.Certificate] = ()) -> list[str]:
    """The certificate's own rules, without its key: refusals (key type and size, wildcard
    names, expired) raise; the warnings Expressway's upload page would give are returned."""
    warnings = _check_public_key(cert.public_key())
    warnings += _check_names(cert, node_fqdn)
    if now >= cert.not_valid_after_utc:
        expired = cert.not_valid_after_utc
        raise PolicyViolation(f"the certificate expired on {expired:%Y-%m-%d %H:%M}Z; have it "
                              "re-issued", "notAfter", "not-expired")
    if now < cert.not_valid_before_utc:
        warnings.append(f"the certificate is not valid until "
                        f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z; TLS peers refuse it "
                        "before then")
    if cert.not_valid_after_utc - now < dt.timedelta(days=EXPIRY_WARN_DAYS):
        warnings.append(f"the certificate expires on {cert.not_valid_after_utc:%Y-%m-%d}, "
                        f"within {EXPIRY_WARN_DAYS} days; plan its renewal")
    if _signature_hash_name(cert) == "sha1":
        warnings.append("the certificate is signed with SHA-1, which browsers and Expressway "
                        "X14 reject (SHA-1 collisions are practical); have it re-issued "
                        "with SHA-256")
    warnings += _check_usage(cert)
    if not any(_issued_by(cert, anchor) for anchor in trusted):
        warnings.append(f"the issuer ({cert.issuer.rfc4514_string()[:120]}) is not in the "
                        "trusted CA list; add its CA certificate (and any intermediates), "
                        "or TLS peers and Expressway itself will not trust this certificate")
    return warnings


def _check_public_key(public_key) -> list[str]:
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.key_size
        if bits < 2048:
            raise PolicyViolation(f"the certificate's RSA {bits}-bit key is refused: use 2048 "
                                  "bits or more (4096 is what the guide recommends)",
                                  "publicKey", "min-rsa-2048")
        if bits > MAX_RSA_BITS:
            raise PolicyViolation(f"the certificate's RSA {bits}-bit key is refused: "
                                  f"{SIP_TLS_8192}", "publicKey", "max-rsa")
        if bits == 8192:
            return [f"RSA 8192-bit key: {SIP_TLS_8192}"]
        return []
    if isinstance(public_key, ec.EllipticCurvePublicKey) and \
            public_key.curve.name in ("secp256r1", "secp384r1", "secp521r1"):
        return []
    kind = describe_key(public_key)
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        kind = f"an EdDSA ({kind})"
    raise PolicyViolation(f"the certificate's key is {kind}, which Expressway cannot use for "
                          "its server certificate; use RSA (4096 bits, as the guide "
                          "recommends) or EC P-256/P-384", "publicKey", "type")


def _check_names(cert: x509.Certificate, node_fqdn: str) -> list[str]:
    warnings = []
    cn = common_name(cert.subject)
    try:
        sans = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    dns = [n.value for n in sans if isinstance(n, x509.DNSName)]
    for name in ([cn] if cn else []) + dns:
        if "*" in name:
            raise PolicyViolation(f"wildcard name {name[:80]!r} refused: Expressway does not "
                                  "support wildcard certificates; list each FQDN as a SAN",
                                  "subjectAltName", "no-wildcard")
    lowered = {n.lower() for n in dns}
    if not dns:
        warnings.append("the certificate has no DNS subjectAltName: browsers (Chrome since "
                        "version 58) and RFC 9525 clients no longer fall back to the CN; have "
                        "it re-issued with the node FQDN as a SAN")
    if not cn:
        warnings.append("the certificate has no commonName; Expressway raises an alarm, and "
                        "MRA, Jabber Guest and the Web Proxy for Meeting Server need the CN "
                        "(X14 guide, 'Loading Certificates and Keys Onto Expressway')")
    elif dns and cn.lower() not in lowered:
        warnings.append(f"CN {cn} is not among the SAN DNS names; TLS clients that follow "
                        "RFC 6125 ignore the CN when SANs are present, so list it as a SAN too")
    if node_fqdn.lower() not in lowered | {(cn or "").lower()}:
        warnings.append(f"{node_fqdn} is in neither the CN nor the SAN DNS names: this looks "
                        "like another peer's certificate; TLS peers connecting to "
                        f"{node_fqdn} will refuse it")
    return warnings + san_warnings(sans)


def _signature_hash_name(cert: x509.Certificate) -> str | None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    return algorithm.name if algorithm else None


def _check_usage(cert: x509.Certificate) -> list[str]:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []  # no EKU: any use (RFC 5280 4.2.1.12)
    warnings = []
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        warnings.append("the certificate has no serverAuth extended key usage; TLS clients "
                        "will refuse it as a server certificate")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        warnings.append("the certificate has no clientAuth extended key usage: neighbor and "
                        "traversal zones in TLS verify mode (mutual TLS) need it; issue it "
                        "from a client-and-server profile (the guide's Webclientandserver)")
    return warnings


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` issued the certificate: names compared as RFC 5280 7.1 has it
    (``ca.trust.name_key``, as CRLs find their CA), the signature verified with the
    certificate's own algorithm parameters, SHA-1 included (the library's
    ``verify_directly_issued_by`` refuses SHA-1 outright; a SHA-1 certificate is warned
    about as such, not called untrusted as well)."""
    if name_key(cert.issuer) != name_key(issuer.subject):
        return False
    key, signed = issuer.public_key(), cert.tbs_certificate_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, signed, cert.signature_algorithm_parameters,
                       cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, signed, cert.signature_algorithm_parameters)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(cert.signature, signed)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True
