"""Reading certificate requests and the Expressway rules for what may be signed."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, PublicKeyAlgorithmOID

from .errors import BadInput, BadSignature, PolicyViolation
from .general_names import check_dns_name, describe, is_ip
from .names import check_name, common_name
from .profiles import Profile

MAX_CSR_BYTES = 64 * 1024
SAN_WARN_CHARS = 999  # Expressway's CSR page and loader warn past this


def load_csr(data: bytes, *, verified: bool = False) -> x509.CertificateSigningRequest:
    """A CSR in PEM (text before the block allowed, as ``openssl req -text`` writes) or DER,
    told apart by content, fully parsed here so that garbage fails with one message; its
    signature must verify, unless ``verified`` says pkiq checked it already (a queued
    job's request, verified when it was submitted)."""
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
            warnings.simplefilter("ignore")  # read it again, for check_name to name the field
            check_name(csr.subject, "request's subject")
            raise BadInput(f"the request's subject breaks RFC 5280: {exc}") from None
        try:
            list(csr.extensions)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise BadInput(f"the request carries a malformed extension ({exc})") from None
    check_name(subject, "request's subject")
    broken = _BROKEN_SIGNATURES.get(csr.signature_algorithm_oid.dotted_string)
    if broken:
        raise PolicyViolation(f"the request is signed with {broken}, which is refused: {broken} "
                              "collisions are practical, so its signature proves nothing; "
                              "sign the request with SHA-256 (openssl req -sha256)",
                              "signature", "hash")
    if csr.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS:
        raise PolicyViolation("RSA-PSS-only keys (rsassaPss) are refused: TLS stacks, "
                              "Expressway's included, expect rsaEncryption keys",
                              "publicKey", "type")
    if not verified:
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


def requested_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The subjectAltNames the request asks for, of every type, unchecked."""
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


# Request signatures pkiq will not verify at all: a collision lets one signed request stand
# for another. SHA-1 requests are still read (the guide makes them); MD5 and older are not.
_BROKEN_SIGNATURES = {
    "1.2.840.113549.1.1.2": "MD2",
    "1.2.840.113549.1.1.3": "MD4",
    "1.2.840.113549.1.1.4": "MD5",
}
MIN_RSA_EXPONENT = 65537  # CA/Browser Forum BR 6.1.6, NIST SP 800-89: odd, at least 2^16+1
MAX_RSA_BITS = 8192


def check_key(public_key) -> list[str]:
    """Refuse keys Expressway or modern TLS refuse; warn where the guide warns."""
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.key_size
        if bits < 2048:
            raise PolicyViolation(
                f"RSA {bits}-bit keys are refused: use 2048 bits or more "
                "(4096 is what the Expressway guide recommends)", "publicKey", "min-rsa-2048")
        if bits > MAX_RSA_BITS:
            raise PolicyViolation(f"RSA {bits}-bit keys are refused: pkiq signs RSA keys of "
                                  f"2048 to {MAX_RSA_BITS} bits (the guide recommends 4096)",
                                  "publicKey", "max-rsa")
        exponent = public_key.public_numbers().e
        if exponent < MIN_RSA_EXPONENT or exponent % 2 == 0:
            shown = exponent if exponent < 10**9 else f"of {exponent.bit_length()} bits"
            raise PolicyViolation(
                f"RSA public exponent {shown} is refused: it must be odd and at least "
                f"{MIN_RSA_EXPONENT} (small exponents such as 3 invite the low-exponent "
                "attacks on RSA padding; generate the key again: every current tool uses "
                "65537)", "publicKey", "rsa-exponent")
        if bits >= 8192:
            return [f"RSA {bits}-bit key: SIP TLS zones on Expressway may fail "
                    "to become active with 8192-bit keys; the guide recommends 4096"]
        return []
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise PolicyViolation(f"EC curve {public_key.curve.name} is not accepted; use "
                                  "P-256, P-384 or P-521", "publicKey", "curve")
        return []
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise PolicyViolation("EdDSA (Ed25519, Ed448) request keys are refused: Expressway's "
                              "TLS stack, and most TLS clients' certificate checks, support "
                              "only RSA and ECDSA certificates; use RSA 4096 or EC P-256/P-384",
                              "publicKey", "type")
    raise PolicyViolation("unsupported public key type in the request (pkiq signs RSA and EC "
                          "P-256/P-384/P-521 keys)", "publicKey", "type")


def check_expressway_names(subject: x509.Name, sans: list[x509.GeneralName],
                           profile: Profile) -> list[str]:
    """The guide's naming rules: a CN is required, no wildcards, clustered CN + SANs. A TLS
    server's CN is a host name or IP address, checked as a DNS SAN would be."""
    warnings: list[str] = []
    cn = common_name(subject)
    if not cn:
        raise PolicyViolation("the request has no commonName: Expressway needs CN = the FQDN "
                              "of the peer (or of the cluster)", "commonName", "required")
    if "*" in cn:
        raise PolicyViolation(f"wildcard name {cn!r} refused: Expressway does not support "
                              "wildcard certificates; list each FQDN as a SAN",
                              "commonName", "no-wildcard")
    if ExtendedKeyUsageOID.SERVER_AUTH in profile.extended_key_usage and not is_ip(cn):
        check_dns_name(cn, what="commonName")
    dns_names = [n.value.lower() for n in sans if isinstance(n, x509.DNSName)]
    if dns_names and cn.lower() not in dns_names and not is_ip(cn):
        warnings.append(f"CN {cn} is not among the SAN DNS names; TLS clients that follow "
                        "RFC 6125 ignore the CN when SANs are present, so list it as a SAN too "
                        "(for a cluster: the cluster FQDN and every peer FQDN)")
    if is_ip(cn):
        warnings.append(f"CN {cn} is an IP address; Expressway zones should use FQDNs as "
                        "peer addresses")
    text = ",".join(describe(n) for n in sans)
    if len(text) > SAN_WARN_CHARS:
        warnings.append(f"the subjectAltName list is {len(text)} characters; Expressway warns "
                        f"past {SAN_WARN_CHARS} and may truncate it")
    return warnings
