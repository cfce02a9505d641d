"""OCSP (RFC 6960): the delegated responder certificate of a CA, and answers to requests.

A CA does not sign OCSP answers with its own key: it issues a short-lived responder
certificate (RFC 6960 section 4.2.2.2: extendedKeyUsage id-kp-OCSPSigning, issued directly
by the CA) whose key signs them. That key is the one an online process holds; losing it
exposes a few days of OCSP answers, not the CA. The certificate carries id-pkix-ocsp-nocheck
(section 4.2.2.2.1), so clients do not ask about the responder's own status, and it is
renewed when less than half its life is left (``needs_renewal``), as CRLs are.

Parsing and building go through ``cryptography.x509.ocsp``; no ASN.1 is written here."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import pkcs8
from .authority import ca_certificate, lock_in_service
from .crl import REASONS
from .errors import BadInput, CaExpired
from .keys import Signer, generate_key, signature_hash
from .models import Certificate, CertificateAuthority, OcspResponder
from .names import openssl_oneline
from .serials import Random, random_serial, serial_hex

RESPONDER_DAYS = 4  # short: a responder key is online; renewed at half life (2 days)
RESPONSE_VALIDITY = dt.timedelta(hours=1)  # nextUpdate - thisUpdate of an answer
RESPONDER_PROFILE = "ocsp-responder"  # the index row's profile column
MAX_NONCE = 32  # RFC 8954 section 2.1: 1 to 32 octets
# CertID hash algorithms answered. SHA-1 is what most clients (openssl's default, RFC 5019)
# send; its weakness does not matter here, it names a certificate, it signs nothing.
CERT_ID_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
                  "sha512": hashes.SHA512}


class Malformed(BadInput):
    """An OCSP request that cannot be parsed or breaks RFC 6960: answered malformedRequest."""


# ---------------------------------------------------------------- the responder certificate

def needs_renewal(responder: OcspResponder | None, now: dt.datetime) -> str | None:
    """Why the CA needs a new responder certificate now, or None: under half its life left
    (the rule CRLs follow, so a responder that cannot be renewed for a day still answers)."""
    if responder is None:
        return "it has no OCSP responder certificate yet"
    half = (responder.not_after - responder.not_before) / 2
    if responder.not_after - now <= half:
        return (f"its OCSP responder certificate {responder.serial} expires at "
                f"{responder.not_after:%Y-%m-%d %H:%M}Z")
    return None


def current_responder(session: Session, ca: CertificateAuthority,
                      now: dt.datetime) -> OcspResponder | None:
    """The newest responder certificate of the CA valid at ``now``."""
    return session.scalar(
        select(OcspResponder).where(OcspResponder.ca_id == ca.id,
                                    OcspResponder.not_before <= now,
                                    OcspResponder.not_after > now)
        .order_by(OcspResponder.not_after.desc(), OcspResponder.id.desc()).limit(1))


def build_responder_certificate(*, signer: Signer, issuer_cert: x509.Certificate, ca_name: str,
                                public_key, serial: int, not_before: dt.datetime,
                                not_after: dt.datetime) -> x509.Certificate:
    """The delegated responder certificate: an end entity that may sign OCSP answers and
    nothing else (RFC 6960 section 4.2.2.2), not checked by OCSP itself (4.2.2.2.1)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"OCSP responder of {ca_name}"[:64])])
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_cert.subject)
        .public_key(public_key).serial_number(serial)
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False)
        .add_extension(x509.OCSPNoCheck(), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
        .add_extension(_authority_key_id(issuer_cert), False))
    return signer.sign_certificate(builder)


_RESPONDER_KEYS = {"RSA 2048": "rsa2048", "RSA 3072": "rsa3072", "RSA 4096": "rsa4096",
                   "EC P-256": "ec-p256", "EC P-384": "ec-p384"}


def _authority_key_id(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The CA's own subject key identifier when it has one (an adopted CA's may not be
    the SHA-1 of its key), as ``ca.issuance`` does for every certificate."""
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())


def responder_key_type(ca: CertificateAuthority) -> str:
    """The CA's own key type: a client that checks the CA's signatures checks the
    responder's. A CA adopted on a key pkiq does not make (Ed25519, RSA 8192) gets P-256."""
    return _RESPONDER_KEYS.get(ca.key_type, "ec-p256")


def issue_responder(session: Session, ca: CertificateAuthority, signer: Signer,
                    passphrase: bytes, now: dt.datetime, *, days: int = RESPONDER_DAYS,
                    rng: Random = os.urandom) -> OcspResponder:
    """A new responder certificate for the CA, recorded in its index (a certificate the CA
    issued, with a serial of its own) and beside its key, encrypted under ``passphrase`` (the
    CA passphrase: whoever may unlock the CA may unlock its responder). The caller commits."""
    lock_in_service(session, ca)
    if ca.not_after <= now:
        raise CaExpired(f"CA {ca.name!r} has expired: it issues no responder certificate",
                        "notAfter", "ca-valid")
    key = generate_key(responder_key_type(ca))
    not_before = (now - dt.timedelta(seconds=ca.clock_skew_seconds)).replace(microsecond=0)
    not_after = min((now + dt.timedelta(days=days)).replace(microsecond=0), ca.not_after)
    serial = random_serial(rng)
    cert = build_responder_certificate(
        signer=signer, issuer_cert=ca_certificate(ca), ca_name=ca.name,
        public_key=key.public_key(), serial=serial, not_before=not_before,
        not_after=not_after)
    der = cert.public_bytes(serialization.Encoding.DER)
    session.add(Certificate(ca_id=ca.id, serial=serial_hex(serial), status="V",
                            subject=openssl_oneline(cert.subject),
                            not_before=not_before, not_after=not_after,
                            profile=RESPONDER_PROFILE, der=der, created_at=now))
    row = OcspResponder(ca_id=ca.id, serial=serial_hex(serial), cert_der=der,
                        key_pem=pkcs8.encrypt(key, passphrase), not_before=not_before,
                        not_after=not_after, created_at=now)
    session.add(row)
    session.flush()
    return row


# ---------------------------------------------------------------- requests and answers

def key_bits(public_key) -> bytes:
    """The subjectPublicKey BIT STRING's content, which issuerKeyHash hashes (RFC 6960
    section 4.1.1)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.PKCS1)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.UncompressedPoint)
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return public_key.public_bytes(serialization.Encoding.Raw,
                                       serialization.PublicFormat.Raw)
    raise BadInput(f"no OCSP for a CA key of type {type(public_key).__name__}")


def issuer_hashes(cert: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """(issuerNameHash, issuerKeyHash) of CertIDs naming ``cert`` as issuer, per algorithm."""
    name = cert.subject.public_bytes()
    bits = key_bits(cert.public_key())
    return {alg: (hashlib.new(alg, name).digest(), hashlib.new(alg, bits).digest())
            for alg in CERT_ID_HASHES}


@dataclass(frozen=True)
class Question:
    """One parsed request: its single CertID and nonce (None when it sent none)."""

    algorithm: str
    name_hash: bytes
    key_hash: bytes
    serial: int
    nonce: bytes | None


def parse_request(der: bytes) -> Question:
    """The request's one CertID and nonce, or ``Malformed``. cryptography reads requests
    with exactly one CertID (what RFC 5019 clients send) and refuses others."""
    try:
        request = ocsp.load_der_ocsp_request(der)
        algorithm = request.hash_algorithm.name
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        serial = request.serial_number
        extensions = request.extensions
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise Malformed(f"not an OCSP request: {str(exc).splitlines()[0][:120]}") from None
    except Exception as exc:  # noqa: BLE001 - cryptography's parser signals hostile DER variously
        raise Malformed(f"not an OCSP request ({type(exc).__name__})") from None
    nonce = None
    for ext in extensions:
        if isinstance(ext.value, x509.OCSPNonce):
            nonce = ext.value.nonce
            if not 1 <= len(nonce) <= MAX_NONCE:
                raise Malformed(f"a nonce of {len(nonce)} octets (RFC 8954: 1 to {MAX_NONCE})")
        elif ext.critical:  # RFC 5280 4.2 semantics: an unknown critical extension is fatal
            raise Malformed(f"unsupported critical extension {ext.oid.dotted_string}")
    if algorithm not in CERT_ID_HASHES:
        raise Malformed(f"CertID hash {algorithm} is not one of {', '.join(CERT_ID_HASHES)}")
    return Question(algorithm, name_hash, key_hash, serial, nonce)


@dataclass(frozen=True)
class Status:
    """What the CA's index says of a serial: good, revoked (when, why) or unknown."""

    state: str  # good | revoked | unknown
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    @classmethod
    def of(cls, row) -> Status:
        """From an index row (status, revoked_at, revocation_reason), or None: never issued."""
        if row is None:
            return cls("unknown")
        if row.status == "R":
            return cls("revoked", row.revoked_at, row.revocation_reason)
        return cls("good")  # an expired entry stays good: nothing revoked it (RFC 6960 2.2)


_STATES = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
           "unknown": ocsp.OCSPCertStatus.UNKNOWN}


def answer(question: Question, status: Status, *, responder_cert: x509.Certificate,
           responder_private_key, now: dt.datetime,
           validity: dt.timedelta = RESPONSE_VALIDITY) -> tuple[bytes, dt.datetime]:
    """The signed BasicOCSPResponse for ``question`` (DER) and its nextUpdate: thisUpdate
    now, nextUpdate ``validity`` later but never past the responder certificate; the nonce
    echoed when asked (RFC 8954). Signed SHA-256 (SHA-384 on P-384)."""
    this_update = now.replace(microsecond=0)
    next_update = min(this_update + validity, responder_cert.not_valid_after_utc)
    revoked = status.state == "revoked"
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=question.name_hash, issuer_key_hash=question.key_hash,
        serial_number=question.serial, algorithm=CERT_ID_HASHES[question.algorithm](),
        cert_status=_STATES[status.state], this_update=this_update, next_update=next_update,
        revocation_time=status.revoked_at if revoked else None,
        revocation_reason=REASONS[status.reason] if revoked and status.reason
        and status.reason != "unspecified" else None)
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder_cert) \
        .certificates([responder_cert])
    if question.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(question.nonce), critical=False)
    response = builder.sign(responder_private_key,
                            signature_hash(responder_private_key.public_key()))
    return response.public_bytes(serialization.Encoding.DER), next_update


def unsuccessful(state: str) -> bytes:
    """An unsigned OCSPResponse with only a status (RFC 6960 section 2.3): malformedRequest,
    internalError, tryLater or unauthorized."""
    status = {"malformedRequest": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
              "internalError": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
              "tryLater": ocsp.OCSPResponseStatus.TRY_LATER,
              "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED}[state]
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)
