"""Secrets other than keys at rest (an Expressway administrator's password), sealed under
the service passphrase as CA keys are: PBKDF2-HMAC-SHA256 at ``pkcs8.PBKDF2_ITERATIONS``
and a fresh salt, then AES-256-GCM, whose tag also binds the sealed text to what it is for
(a node's FQDN): a password copied onto another node's row does not open there.

There is no standard container for a sealed password as there is PKCS#8 for keys, so the
container is a small JSON object naming its algorithm and parameters; cryptography does the
cryptography.
"""

from __future__ import annotations

import base64
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from . import pkcs8
from .errors import BadInput, WrongPassphrase

ALGORITHM = "PBKDF2-HMAC-SHA256/AES-256-GCM"
MAX_SECRET = 4096


def _key(passphrase: bytes, salt: bytes, iterations: int) -> bytes:
    return PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(passphrase)


def seal(secret: bytes, passphrase: bytes, context: str) -> str:
    if not secret or len(secret) > MAX_SECRET:
        raise BadInput(f"a secret is 1 to {MAX_SECRET} bytes")
    salt, nonce = os.urandom(16), os.urandom(12)
    rounds = pkcs8.PBKDF2_ITERATIONS
    sealed = AESGCM(_key(passphrase, salt, rounds)).encrypt(nonce, secret, context.encode())
    return json.dumps({"alg": ALGORITHM, "iter": rounds,
                       "salt": base64.b64encode(salt).decode(),
                       "nonce": base64.b64encode(nonce).decode(),
                       "data": base64.b64encode(sealed).decode()}, sort_keys=True)


def unseal(text: str, passphrase: bytes, context: str, what: str = "the secret") -> bytes:
    try:
        box = json.loads(text)
        if box["alg"] != ALGORITHM:
            raise ValueError(box["alg"])
        rounds = int(box["iter"])
        salt, nonce, data = (base64.b64decode(box[k], validate=True)
                             for k in ("salt", "nonce", "data"))
    except (ValueError, KeyError, TypeError):
        raise BadInput(f"{what} is not stored in a form pkiq reads: set it again") from None
    if not 1 <= rounds <= pkcs8.MAX_PBKDF2_ITERATIONS:
        raise BadInput(f"{what} asks for {rounds:,} PBKDF2 iterations: refused")
    try:
        return AESGCM(_key(passphrase, salt, rounds)).decrypt(nonce, data, context.encode())
    except InvalidTag:
        raise WrongPassphrase(f"{what} does not open with this passphrase (or was copied "
                              "from another node)") from None
