"""CA keys: generation, encryption at rest, and the signer interface issuance talks to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from . import pkcs8
from .errors import BadInput, WeakPassphrase, WrongPassphrase

KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384")
# Of a passphrase being chosen (a new CA, an import, ``ca passwd``). NIST SP 800-63B asks
# 8 of a memorised secret that a rate-limited verifier checks; a stolen CA key has no rate
# limit but the KDF's, so pkiq asks 12 (a random one: ``openssl rand -base64 24``).
MIN_PASSPHRASE = 12


def generate_key(key_type: str):
    """A fresh private key of one of ``KEY_TYPES``."""
    if key_type.startswith("rsa") and key_type[3:] in ("2048", "3072", "4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    raise BadInput(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def describe_key(public_key) -> str:
    """A short name such as ``RSA 4096`` or ``EC P-256`` for messages and listings."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384", "secp521r1": "EC P-521"}.get(
            public_key.curve.name, f"EC {public_key.curve.name}"
        )
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public_key).__name__


def encrypt_key(private_key, passphrase: bytes, what: str = "the CA passphrase") -> str:
    """PKCS#8 PEM encrypted with PBES2 (PBKDF2-HMAC-SHA256 at ``pkcs8.PBKDF2_ITERATIONS``,
    AES-256-CBC) under a passphrase being chosen now: what we store."""
    check_passphrase(passphrase, what)
    return pkcs8.encrypt(private_key, passphrase)


def reencrypt_key(private_key, passphrase: bytes) -> str:
    """The same, under the passphrase the key was just unlocked with: upgrading the work
    factor of a stored key must not lock out a CA whose passphrase predates the length rule."""
    return pkcs8.encrypt(private_key, passphrase)


def passphrase_length(passphrase: bytes) -> int:
    """In characters (UTF-8), as people count them; bytes when it is not UTF-8."""
    try:
        return len(passphrase.decode("utf-8"))
    except UnicodeDecodeError:
        return len(passphrase)


def check_passphrase(passphrase: bytes, what: str = "the CA passphrase") -> None:
    if passphrase_length(passphrase) < MIN_PASSPHRASE:
        raise WeakPassphrase(f"{what} is shorter than {MIN_PASSPHRASE} characters; choose a "
                             "longer one (a random one: openssl rand -base64 24)")


def decrypt_key(pem: str | bytes, passphrase: bytes | None, what: str = "the CA key"):
    """Load an encrypted (or, for imports, clear) PEM private key; wrong passphrase -> one error.
    A key whose KDF asks for absurd work is refused before any is done."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    pkcs8.check_work(data, what)
    try:
        return serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:  # encrypted but no passphrase, or clear with one
        if passphrase:
            return serialization.load_pem_private_key(data, password=None)
        raise WrongPassphrase(f"{what} is encrypted: give its passphrase") from exc
    except ValueError as exc:
        if b"ENCRYPTED" in data:
            raise WrongPassphrase(f"wrong passphrase for {what}") from exc
        raise BadInput(f"{what} is not a PEM private key pkiq can read") from exc


DIGESTS = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def signature_hash(public_key, digest: str | None = None) -> hashes.HashAlgorithm | None:
    """The digest pkiq signs with: SHA-256, or SHA-384 for P-384 (RFC 5480 pairs curve and hash).

    Never SHA-1, whatever a request or an old guide asks for: SHA-1 certificates are refused
    by current TLS stacks and collisions are practical (SHAttered, 2017).
    """
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    if digest is not None:
        return DIGESTS[digest]()
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


_CURVE_HASH = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}


def check_digest(public_key, digest: str | None) -> None:
    """``--md`` on an EC CA must be the curve's own hash: TLS 1.3 names ECDSA signature
    schemes by curve and hash together (ecdsa_secp256r1_sha256, RFC 8446 4.2.3), so a P-256
    certificate signed with SHA-512 fails where a peer offers only those pairs."""
    if digest is None or not isinstance(public_key, ec.EllipticCurvePublicKey):
        return
    expected = _CURVE_HASH.get(public_key.curve.name)
    if expected is not None and digest != expected:
        raise BadInput(f"--md {digest} does not suit this CA's {describe_key(public_key)} key: "
                       f"an ECDSA CA signs with its curve's hash ({expected}), as TLS 1.3's "
                       "signature schemes pair them; leave --md out")


class Signer(Protocol):
    """What issuance needs from a CA key; a software key, an HSM or a KMS can stand behind it."""

    def public_key(self): ...

    def sign_certificate(self, builder: x509.CertificateBuilder,
                         digest: str | None = None) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...


@dataclass(frozen=True, repr=False)
class SoftwareSigner:
    """A private key held in this process's memory only (loaded once, never written in clear)."""

    private_key: object

    def __repr__(self) -> str:  # never print key material, even by accident
        return f"SoftwareSigner({describe_key(self.public_key())})"

    def public_key(self):
        return self.private_key.public_key()

    def sign_certificate(self, builder: x509.CertificateBuilder,
                         digest: str | None = None) -> x509.Certificate:
        return builder.sign(self.private_key, signature_hash(self.public_key(), digest))

    def sign_crl(self, builder: x509.CertificateRevocationListBuilder):
        return builder.sign(self.private_key, signature_hash(self.public_key()))
