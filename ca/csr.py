"""Reading certificate requests and the Expressway rules for what may be signed."""

from __future__ import annotations

import ipaddress
import re
import warnings

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import PublicKeyAlgorithmOID

from .errors import BadInput, BadSignature, PolicyViolation
from .names import check_name, common_name

MAX_CSR_BYTES = 64 * 1024
SAN_WARN_CHARS = 999  # Expressway's CSR page and loader warn past this
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A CSR in PEM (text before the block allowed, as ``openssl req -text`` writes) or DER,
    told apart by content, fully parsed here so that garbage fails with one message; its
    signature must verify."""
    if len(data) > MAX_CSR_BYTES:
        raise BadInput(f"certificate request is {len(data)} bytes; pkiq reads at most "
                       f"{MAX_CSR_BYTES}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cryptography warns on RFC 5280 violations: refuse
        try:
            if b"-----BEGIN" in data:
                csr = x509.load_pem_x509_csr(data)
            else:
                csr = x509.load_der_x509_csr(data)
            subject = csr.subject
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise BadInput("not a certificate request (expected a PEM 'CERTIFICATE REQUEST' "
                           "or DER PKCS#10)") from exc
        except UserWarning as exc:
            raise BadInput(f"the request's subject breaks RFC 5280: {exc}") from None
        try:
            list(csr.extensions)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise BadInput(f"the request carries a malformed extension ({exc})") from None
    check_name(subject)
    if csr.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS:
        raise PolicyViolation("RSA-PSS-only keys (rsassaPss) are refused: TLS stacks, "
                              "Expressway's included, expect rsaEncryption keys",
                              "publicKey", "type")
    verify_csr_signature(csr)
    return csr


def verify_csr_signature(csr: x509.CertificateSigningRequest) -> None:
    """Proof of possession. SHA-1 requests (the guide's ``-sha1``) are checked by hand,
    since the library now refuses SHA-1 outright; only the *request* may use SHA-1 — what
    pkiq signs is always SHA-256 or stronger."""
    try:
        if csr.is_signature_valid:
            return
        hash_alg = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise BadSignature(f"certificate request uses an unsupported signature ({exc})") from exc
    if not isinstance(hash_alg, hashes.SHA1):
        raise BadSignature("the certificate request's signature does not verify "
                           "(the request was altered, or not signed by its own key)")
    key = csr.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(csr.signature, csr.tbs_certrequest_bytes, padding.PKCS1v15(), hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(csr.signature, csr.tbs_certrequest_bytes, ec.ECDSA(hash_alg))
        else:
            raise InvalidSignature
    except InvalidSignature as exc:
        raise BadSignature("the certificate request's signature does not verify "
                           "(the request was altered, or not signed by its own key)") from exc


def requested_dns_names(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def san_text(csr: x509.CertificateSigningRequest) -> str:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    parts = []
    for gn in san:
        prefix = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email",
                  x509.UniformResourceIdentifier: "URI"}.get(type(gn), "othername")
        parts.append(f"{prefix}:{gn.value}")
    return ",".join(parts)


def check_key(public_key) -> list[str]:
    """Refuse keys Expressway or modern TLS refuse; warn where the guide warns."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise PolicyViolation(
                f"RSA {public_key.key_size}-bit keys are refused: use 2048 bits or more "
                "(4096 is what the Expressway guide recommends)", "publicKey", "min-rsa-2048")
        if public_key.key_size >= 8192:
            return [f"RSA {public_key.key_size}-bit key: SIP TLS zones on Expressway may fail "
                    "to become active with 8192-bit keys; the guide recommends 4096"]
        return []
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise PolicyViolation(f"EC curve {public_key.curve.name} is not accepted; use "
                                  "P-256, P-384 or P-521", "publicKey", "curve")
        return []
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ["EdDSA keys are not supported by Expressway's TLS stack"]
    raise PolicyViolation("unsupported public key type in the request", "publicKey", "type")


def check_expressway_names(subject: x509.Name, csr: x509.CertificateSigningRequest) -> list[str]:
    """The guide's naming rules: a CN is required, no wildcards, clustered CN + SANs."""
    warnings: list[str] = []
    cn = common_name(subject)
    if not cn:
        raise PolicyViolation("the request has no commonName: Expressway needs CN = the FQDN "
                              "of the peer (or of the cluster)", "commonName", "required")
    dns_names = requested_dns_names(csr)
    for name in [cn, *dns_names]:
        if "*" in name:
            raise PolicyViolation(f"wildcard name {name!r} refused: Expressway does not support "
                                  "wildcard certificates; list each FQDN as a SAN",
                                  "subjectAltName", "no-wildcard")
    for name in dns_names:
        if not _is_dns_name(name):
            raise PolicyViolation(f"subjectAltName DNS:{name!r} is not a valid host name",
                                  "subjectAltName", "dns-syntax")
    if dns_names and cn.lower() not in {n.lower() for n in dns_names} and _is_dns_name(cn):
        warnings.append(f"CN {cn} is not among the SAN DNS names; TLS clients that follow "
                        "RFC 6125 ignore the CN when SANs are present, so list it as a SAN too "
                        "(for a cluster: the cluster FQDN and every peer FQDN)")
    if _is_ip(cn):
        warnings.append(f"CN {cn} is an IP address; Expressway zones should use FQDNs as "
                        "peer addresses")
    text = san_text(csr)
    if len(text) > SAN_WARN_CHARS:
        warnings.append(f"the subjectAltName list is {len(text)} characters; Expressway warns "
                        f"past {SAN_WARN_CHARS} and may truncate it")
    return warnings


def _is_dns_name(name: str) -> bool:
    name = name.rstrip(".")
    return 0 < len(name) <= 253 and all(_DNS_LABEL.match(label) for label in name.split("."))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False
