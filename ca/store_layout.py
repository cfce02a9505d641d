"""What one Expressway node's file store holds: names and bytes, computed, never written.

A node gets what the Cisco guide has an administrator upload ("Loading certificates and
keys onto Expressway", "Managing the trusted CA certificate list", "Certificate revocation
sources"): its server certificate alone, its private key unencrypted with a trailing
newline, the trusted CA list, the CRLs as one PEM file, and the trusted list with the CRLs
appended (the only CRL data Expressway reads for LDAP connections). Other TLS stacks on the
same host get the leaf with its chain, and an OpenSSL ``-CApath`` folder (``<hash>.N`` for
certificates, ``<hash>.rN`` for CRLs, as ``openssl rehash`` names them).

The same inputs always give the same bytes, in the same order; ``digest`` covers every file
but the manifest, so a publisher can tell "nothing changed" without comparing times.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .bundles import crl_bundle
from .crl_order import crl_number, crl_pem, ordered_crls
from .crl_scope import scope_of
from .encoding import pem_blocks
from .errors import BadInput, PolicyViolation
from .general_names import describe
from .name_hash import subject_hash
from .names import openssl_oneline
from .trust import fingerprint, name_key

__all__ = ["MANIFEST", "PRIVATE_KEY", "StoreContent", "StoreInputs", "check_trusted_list",
           "crl_pem", "ordered_crls", "store_files", "subject_hash", "unique_certificates"]

MANIFEST = "manifest.json"
PRIVATE_KEY = "privkey.pem"
MANIFEST_FORMAT = 1
_CLEAR_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


@dataclass(frozen=True)
class StoreInputs:
    """Everything one node's store is made of. ``chain`` runs from the leaf's issuer
    upward; ``trusted`` is the node's trusted CA list (roots and intermediates); ``crls``
    are the DER of every current CRL the node needs, already validated by the caller."""

    server_cert: x509.Certificate | None
    chain: tuple[x509.Certificate, ...]
    private_key_pem: bytes | None
    trusted: tuple[x509.Certificate, ...]
    crls: tuple[bytes, ...]
    reason: str


@dataclass(frozen=True)
class StoreContent:
    """The files of one generation, in a fixed order; ``private`` are written 0600."""

    files: dict[str, bytes]
    private: frozenset[str]
    digest: str


def unique_certificates(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """``certs`` without repeats (the same DER twice), first occurrence kept."""
    seen: set[str] = set()
    out = []
    for cert in certs:
        print_ = fingerprint(cert)
        if print_ not in seen:
            seen.add(print_)
            out.append(cert)
    return tuple(out)


def check_trusted_list(certs: Iterable[x509.Certificate]) -> None:
    """Refuse two different certificates with the same issuer and subject (compared as RFC
    5280 7.1 compares names): Expressway keeps one per issuer and subject, and the guide has
    the previous one deleted before the new one is appended ("Managing the trusted CA
    certificate list"). The same certificate twice is not a conflict."""
    by_names: dict[tuple[str, str], x509.Certificate] = {}
    for cert in unique_certificates(certs):
        key = (name_key(cert.issuer), name_key(cert.subject))
        other = by_names.setdefault(key, cert)
        if other is not cert:
            raise PolicyViolation(
                f"the trusted CA list holds two certificates for subject "
                f"{openssl_oneline(cert.subject)} issued by {openssl_oneline(cert.issuer)} "
                f"(SHA-256 {fingerprint(other)[:16]}… and {fingerprint(cert)[:16]}…): "
                "Expressway keeps one per issuer and subject; remove the old one "
                "(pkiq trust remove) before adding the new one",
                field="trusted", rule="expressway-one-ca-per-issuer-and-subject")


def store_files(inputs: StoreInputs, now: dt.datetime) -> StoreContent:
    """The files of a node's store for ``inputs``, published at ``now`` (aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if inputs.private_key_pem is not None and inputs.server_cert is None:
        raise BadInput("a private key without its server certificate: publish both or "
                       "neither")
    chain = unique_certificates(inputs.chain)
    trusted = _sorted_certs(unique_certificates(inputs.trusted))
    check_trusted_list(trusted)
    crls = ordered_crls(inputs.crls)
    files: dict[str, bytes] = {}
    leaf = inputs.server_cert
    if leaf is not None:
        files["server.pem"] = _pem(leaf)
    if chain:
        files["chain.pem"] = b"".join(_pem(cert) for cert in chain)
    if leaf is not None:
        files["fullchain.pem"] = files["server.pem"] + files.get("chain.pem", b"")
    if inputs.private_key_pem is not None:
        files[PRIVATE_KEY] = _clear_key(inputs.private_key_pem, leaf)
    trusted_pem = b"".join(_pem(cert) for cert in trusted)
    crls_pem = b"".join(crl_pem(der) for der, _crl in crls)
    if trusted_pem:
        files["trusted-ca.pem"] = trusted_pem
    if crls_pem:
        files["crls.pem"] = crls_pem
    if trusted_pem or crls_pem:
        files["trusted-ca-with-crls.pem"] = trusted_pem + crls_pem
    if crls:  # what an Expressway's automatic CRL updates fetch: ZIP or GZIP archives
        ders = [der for der, _crl in crls]
        files["crls.zip"] = crl_bundle(ders, "zip")
        files["crls.tar.gz"] = crl_bundle(ders, "tgz")
    files.update(_capath(trusted, crls))
    digest = _digest(files)
    files[MANIFEST] = _manifest(inputs, now, digest, files, leaf, chain, trusted, crls)
    private = frozenset({PRIVATE_KEY} & files.keys())
    return StoreContent(files=files, private=private, digest=digest)


def _capath(trusted: Sequence[x509.Certificate],
            crls: Sequence[tuple[bytes, x509.CertificateRevocationList]]) -> dict[str, bytes]:
    """``openssl rehash`` names: ``<hash>.N`` per certificate and ``<hash>.rN`` per CRL, N
    counting from 0 among those sharing a hash (certificates and CRLs counted apart)."""
    out: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    for cert in trusted:
        key = subject_hash(cert.subject)
        counts[key] = counts.get(key, -1) + 1
        out[f"capath/{key}.{counts[key]}"] = _pem(cert)
    for der, crl in crls:
        key = "r" + subject_hash(crl.issuer)
        counts[key] = counts.get(key, -1) + 1
        out[f"capath/{key[1:]}.r{counts[key]}"] = crl_pem(der)
    return out


def _clear_key(pem: bytes, leaf: x509.Certificate | None) -> bytes:
    """The key as one clear PEM block ending in exactly one newline (the guide: "Service
    failures ... private key file that does not contain a trailing newline"), in the form
    it was given (PKCS#8 ``PRIVATE KEY`` or OpenSSL's traditional ``RSA``/``EC PRIVATE
    KEY``) but written afresh, so no text or header around the block reaches the node;
    checked to be the server certificate's."""
    blocks = list(pem_blocks(pem))
    if len(blocks) != 1 or blocks[0].label not in _CLEAR_KEY_LABELS:
        labels = ", ".join(block.label for block in blocks) or "no PEM block"
        raise BadInput(f"the node's private key must be one unencrypted PEM key (Expressway "
                       f"cannot use a passphrase), not: {labels}")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"the node's private key cannot be read: {exc}") from None
    if leaf is not None and _spki(key.public_key()) != _spki(leaf.public_key()):
        raise PolicyViolation("the node's private key does not belong to its server "
                              "certificate; publish the key the request was made with",
                              field="private_key", rule="key-matches-certificate")
    form = (serialization.PrivateFormat.PKCS8 if blocks[0].label == "PRIVATE KEY"
            else serialization.PrivateFormat.TraditionalOpenSSL)
    text = key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    return text.rstrip(b"\n") + b"\n"


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _sorted_certs(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return tuple(sorted(certs, key=lambda c: (openssl_oneline(c.subject), fingerprint(c))))


def _digest(files: dict[str, bytes]) -> str:
    """SHA-256 over each file's name and content, each length-prefixed so no two sets of
    files can run together into the same stream."""
    digest = hashlib.sha256()
    for name, data in files.items():
        encoded = name.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _manifest(inputs: StoreInputs, now: dt.datetime, digest: str, files: dict[str, bytes],
              leaf: x509.Certificate | None, chain: Sequence[x509.Certificate],
              trusted: Sequence[x509.Certificate],
              crls: Sequence[tuple[bytes, x509.CertificateRevocationList]]) -> bytes:
    """What a person or a script checks the store against: every file's SHA-256 and size,
    and what the certificates and CRLs are, without having to parse them."""
    document = {
        "format": MANIFEST_FORMAT,
        "published_at": _time(now),
        "reason": inputs.reason,
        "digest": digest,
        "server": None if leaf is None else {
            "subject": openssl_oneline(leaf.subject),
            "issuer": openssl_oneline(leaf.issuer),
            "serial": f"{leaf.serial_number:X}",
            "not_after": _time(leaf.not_valid_after_utc),
            "fingerprint": fingerprint(leaf),
        },
        "chain": [_cert_entry(cert) for cert in chain],
        "trusted": [_cert_entry(cert) for cert in trusted],
        "crls": [_crl_entry(der, crl) for der, crl in crls],
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                  for name, data in files.items()},
    }
    return (json.dumps(document, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def _cert_entry(cert: x509.Certificate) -> dict:
    return {"subject": openssl_oneline(cert.subject), "issuer": openssl_oneline(cert.issuer),
            "hash": subject_hash(cert.subject), "not_after": _time(cert.not_valid_after_utc),
            "fingerprint": fingerprint(cert)}


def _crl_entry(der: bytes, crl: x509.CertificateRevocationList) -> dict:
    scope = scope_of(crl)
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
        full_name = [describe(name) for name in idp.full_name or ()]
    except x509.ExtensionNotFound:
        idp, full_name = None, []
    return {
        "issuer": openssl_oneline(crl.issuer),
        "hash": subject_hash(crl.issuer),
        "number": crl_number(crl),
        "scope": {"complete": scope.complete, "idp": idp is not None, "text": scope.text,
                  "full_name": full_name},
        "this_update": _time(crl.last_update_utc),
        "next_update": None if crl.next_update_utc is None else _time(crl.next_update_utc),
        "sha256": hashlib.sha256(der).hexdigest(),
    }


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
