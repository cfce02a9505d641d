"""CA keys at rest: encrypted PKCS#8 at a work factor of pkiq's choosing, and reading which
protection a stored key has without its passphrase.

pyca/cryptography writes encrypted PKCS#8 only at a fixed 2,048 PBKDF2 iterations
(``BestAvailableEncryption``; its ``encryption_builder()`` serves OpenSSH and PKCS#12, not
PKCS#8), which lets a stolen key be guessed at thousands of passphrases a second per core.
So the EncryptedPrivateKeyInfo (RFC 5958 section 3) with PBES2 (RFC 8018 section 6.2) is put
together here: the ASN.1 types come from pyasn1-modules (no hand-written DER), the
primitives from cryptography (PBKDF2-HMAC-SHA256, AES-256-CBC, PKCS#7 padding), and the
result is a standard ``ENCRYPTED PRIVATE KEY`` PEM that cryptography's loader and
``openssl`` (``openssl ca -passin``) read.

Why PBKDF2 and not scrypt: OWASP's Password Storage Cheat Sheet asks PBKDF2-HMAC-SHA256 for
600,000 iterations, or scrypt with N=2**17, r=8 (128 MiB). OpenSSL decrypts a PKCS#8 scrypt
key with at most 32 MiB of memory (N=2**14 with r=8, below that guidance), so a key
``export-openssl`` hands to ``openssl ca`` would not open there.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc5280, rfc5958, rfc7914, rfc8018

from .encoding import EncodingError, pem_blocks
from .errors import BadInput

# The work factor of every key pkiq encrypts. Read at each call: tests/conftest.py lowers it
# for the test process alone (a test checks that nothing else assigns it, and that a real
# ``pkiq ca create`` stores this value).
PBKDF2_ITERATIONS = 600_000
# A key asking for more work than this is refused before any is done: an imported
# cakey.pem with 2**31 iterations would otherwise hold a command for days.
MAX_PBKDF2_ITERATIONS = 50_000_000
MAX_SCRYPT_BYTES = 2**30  # 128 * N * r * p, what scrypt needs in memory

SCHEME = "PBKDF2-HMAC-SHA256"
CIPHER = "AES-256-CBC"
LABEL = "ENCRYPTED PRIVATE KEY"
_SALT_BYTES = 16  # RFC 8018 4.1 asks at least 8; NIST SP 800-132 at least 16
_PRFS = {rfc8018.id_hmacWithSHA1: "PBKDF2-HMAC-SHA1", rfc8018.id_hmacWithSHA224:
         "PBKDF2-HMAC-SHA224", rfc8018.id_hmacWithSHA256: SCHEME,
         rfc8018.id_hmacWithSHA384: "PBKDF2-HMAC-SHA384",
         rfc8018.id_hmacWithSHA512: "PBKDF2-HMAC-SHA512"}
_CIPHERS = {rfc8018.aes128_CBC_PAD: "AES-128-CBC", rfc8018.aes192_CBC_PAD: "AES-192-CBC",
            rfc8018.aes256_CBC_PAD: CIPHER, rfc8018.des_EDE3_CBC: "DES-EDE3-CBC",
            rfc8018.desCBC: "DES-CBC"}


@dataclass(frozen=True)
class Protection:
    """How a stored key is encrypted, as its PEM says (no passphrase needed)."""

    kdf: str  # "PBKDF2-HMAC-SHA256", "scrypt N=16384 r=8 p=1", "PBES1", "none", ...
    iterations: int | None = None  # PBKDF2's count; None for other KDFs
    cipher: str | None = None
    memory: int | None = None  # bytes scrypt needs (128 * N * r * p); None for other KDFs

    def __str__(self) -> str:
        parts = [self.kdf]
        if self.iterations is not None:
            parts.append(f"{self.iterations:,} iteration" + "s" * (self.iterations != 1))
        if self.cipher:
            parts.append(self.cipher)
        return ", ".join(parts)

    def is_current(self) -> bool:
        """What pkiq writes today, at today's work factor or more: else re-encrypt."""
        return (self.kdf == SCHEME and self.cipher == CIPHER
                and (self.iterations or 0) >= PBKDF2_ITERATIONS)


def current() -> Protection:
    return Protection(SCHEME, PBKDF2_ITERATIONS, CIPHER)


def encrypt(private_key, passphrase: bytes, iterations: int | None = None) -> str:
    """The key as an ``ENCRYPTED PRIVATE KEY`` PEM: PBES2 with PBKDF2-HMAC-SHA256 at
    ``iterations`` (default ``PBKDF2_ITERATIONS``) and AES-256-CBC, fresh salt and IV."""
    rounds = iterations or PBKDF2_ITERATIONS
    salt, iv = os.urandom(_SALT_BYTES), os.urandom(16)
    kek = PBKDF2HMAC(hashes.SHA256(), 32, salt, rounds).derive(passphrase)
    clear = private_key.private_bytes(serialization.Encoding.DER,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    padder = padding.PKCS7(128).padder()  # RFC 8018 B.2.5: the CBC pad of RFC 1423
    padded = padder.update(clear) + padder.finalize()
    encryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padded) + encryptor.finalize()

    kdf_params = rfc8018.PBKDF2_params()
    kdf_params["salt"]["specified"] = salt
    kdf_params["iterationCount"] = rounds
    kdf_params["prf"] = _algorithm(rfc8018.id_hmacWithSHA256, univ.Null(""))
    pbes2 = rfc8018.PBES2_params()
    pbes2["keyDerivationFunc"] = _algorithm(rfc8018.id_PBKDF2, kdf_params)
    pbes2["encryptionScheme"] = _algorithm(rfc8018.aes256_CBC_PAD,
                                           univ.OctetString(iv))
    info = rfc5958.EncryptedPrivateKeyInfo()
    info["encryptionAlgorithm"] = _algorithm(rfc8018.id_PBES2, pbes2)
    info["encryptedData"] = sealed
    return _pem(encoder.encode(info))


def protection(pem: str | bytes) -> Protection:
    """What protects a stored key: the KDF, its work factor and the cipher, read from the
    EncryptedPrivateKeyInfo (RFC 5958) and its PBES2 parameters (RFC 8018 A.2-A.4, B.2),
    or from the headers of OpenSSL's older encrypted PEM (RFC 1421, one MD5 round)."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        block = next((b for b in pem_blocks(data, max_blocks=4)
                      if b.label.endswith("PRIVATE KEY")), None)
    except EncodingError:
        block = None
    if block is None:
        return Protection("unreadable")
    if block.label != LABEL:
        if b"Proc-Type: 4,ENCRYPTED" in data:
            dek = data.split(b"DEK-Info:", 1)[-1].split(b",", 1)[0].strip()
            return Protection("OpenSSL PEM (EVP_BytesToKey, MD5)", 1,
                              dek.decode("ascii", "replace")[:32])
        return Protection("none")
    try:
        return _pbes(block.der)
    except (PyAsn1Error, ValueError, TypeError):
        return Protection("unreadable")


def check_work(pem: str | bytes, what: str) -> None:
    """Refuse, before deriving anything, a key whose KDF asks for more work or memory than
    any sensible one: decrypting it would hold the command (or exhaust memory) instead."""
    found = protection(pem)
    if found.iterations is not None and found.iterations > MAX_PBKDF2_ITERATIONS:
        raise BadInput(f"{what} asks for {found.iterations:,} PBKDF2 iterations; pkiq "
                       f"decrypts keys of at most {MAX_PBKDF2_ITERATIONS:,}")
    if found.memory is not None and found.memory > MAX_SCRYPT_BYTES:
        raise BadInput(f"{what} asks scrypt for {found.memory // 2**20:,} MiB of "
                       f"memory; pkiq decrypts keys needing at most "
                       f"{MAX_SCRYPT_BYTES // 2**20:,} MiB")


def _pbes(der: bytes) -> Protection:
    info, rest = decoder.decode(der, asn1Spec=rfc5958.EncryptedPrivateKeyInfo())
    if rest:
        return Protection("unreadable")
    scheme = info["encryptionAlgorithm"]
    if scheme["algorithm"] != rfc8018.id_PBES2:
        return Protection(f"PBES1 or PKCS#12 ({scheme['algorithm']})")
    params, _ = decoder.decode(scheme["parameters"], asn1Spec=rfc8018.PBES2_params())
    kdf, cipher_id = params["keyDerivationFunc"], params["encryptionScheme"]["algorithm"]
    cipher = _CIPHERS.get(cipher_id, str(cipher_id))
    if kdf["algorithm"] == rfc8018.id_PBKDF2:
        kdf_params, _ = decoder.decode(kdf["parameters"], asn1Spec=rfc8018.PBKDF2_params())
        prf = kdf_params["prf"]["algorithm"]
        return Protection(_PRFS.get(prf, f"PBKDF2 with {prf}"),
                          int(kdf_params["iterationCount"]), cipher)
    if kdf["algorithm"] == rfc7914.id_scrypt:
        sp, _ = decoder.decode(kdf["parameters"], asn1Spec=rfc7914.Scrypt_params())
        n, r, p = (int(sp[name]) for name in ("costParameter", "blockSize",
                                              "parallelizationParameter"))
        return Protection(f"scrypt N={n} r={r} p={p}", None, cipher, 128 * n * r * p)
    return Protection(f"PBES2 with KDF {kdf['algorithm']}", None, cipher)


def _algorithm(oid, parameters) -> rfc5280.AlgorithmIdentifier:
    algorithm = rfc5280.AlgorithmIdentifier()
    algorithm["algorithm"] = oid
    algorithm["parameters"] = encoder.encode(parameters)
    return algorithm


def _pem(der: bytes) -> str:
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]  # RFC 7468 section 2
    return "\n".join([f"-----BEGIN {LABEL}-----", *lines, f"-----END {LABEL}-----", ""])
