"""A node's server key and certificate, as the guide's Server certificate page keeps them.

pkiq generates the key (so it never travels), keeps one CSR in progress per node ("the
Expressway has to keep track of the private key file associated with the current request"),
and pairs the certificate that comes back with that key: issued by the signing queue, or
uploaded from a CA elsewhere. Keys are stored as PKCS#8 under the service passphrase, like
CA keys; the store's privkey.pem is the one place a key is written in clear, because
Expressway takes nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import Conflict, NotFound, PolicyViolation
from .expressway import build_node_csr, check_node_key_type, generate_node_key
from .keys import decrypt_key, describe_key, reencrypt_key
from .models import ExpresswayNode, NodeCredential, SigningJob
from .server_upload import CheckedServerCertificate, check_server_upload

SECRET = "the service passphrase (PKIQ_CA_PASSPHRASE_FILE)"


def spki_sha256(public_key) -> str:
    return hashlib.sha256(public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def _of(session: Session, node: ExpresswayNode, state: str) -> NodeCredential | None:
    return session.scalar(select(NodeCredential).where(
        NodeCredential.node_id == node.id, NodeCredential.state == state))


def pending(session: Session, node: ExpresswayNode) -> NodeCredential | None:
    """The CSR in progress, if any."""
    return _of(session, node, "pending")


def active(session: Session, node: ExpresswayNode) -> NodeCredential | None:
    """The key and certificate the node's store publishes."""
    return _of(session, node, "active")


def start_csr(session: Session, node: ExpresswayNode, profile, *, key_type: str,
              passphrase: bytes, now: dt.datetime, key=None, **subject_fields
              ) -> NodeCredential:
    """A new key and CSR for ``node``; refused while another is in progress (discard it
    first, as on Expressway)."""
    check_node_key_type(key_type)
    current = pending(session, node)
    if current is not None:
        raise Conflict(f"a CSR is in progress for {node.fqdn} since "
                       f"{current.created_at:%Y-%m-%d %H:%M}Z; only one can be (the key of "
                       f"that request is kept for it): discard it first with "
                       f"pkiq node csr {node.fqdn} --discard")
    key = key or generate_node_key(key_type)
    csr = build_node_csr(profile, key, **subject_fields)
    row = NodeCredential(
        node_id=node.id, state="pending", source="generated", key_type=key_type,
        key_pem=reencrypt_key(key, passphrase), spki_sha256=spki_sha256(key.public_key()),
        csr_der=csr.public_bytes(serialization.Encoding.DER), warnings=[], created_at=now)
    session.add(row)
    session.flush()
    return row


def require_pending(session: Session, node: ExpresswayNode) -> NodeCredential:
    row = pending(session, node)
    if row is None:
        raise NotFound(f"no CSR in progress for {node.fqdn}: pkiq node csr {node.fqdn} "
                       "--generate starts one")
    return row


def discard(session: Session, node: ExpresswayNode, now: dt.datetime) -> NodeCredential:
    """Drop the CSR in progress and its key (kept as history, the key still encrypted)."""
    row = require_pending(session, node)
    row.state, row.ended_at = "discarded", now
    session.flush()
    return row


def link_job(row: NodeCredential, job: SigningJob) -> None:
    """Remember which signing job answers this CSR, so its certificate finds the key."""
    row.job_id = job.id


def _activate(session: Session, node: ExpresswayNode, row: NodeCredential,
              now: dt.datetime) -> None:
    """``row`` (pending, or new and not yet added) becomes the node's active credential;
    the previous one retires first, as the one-active index requires."""
    old = active(session, node)
    if old is not None and old is not row:
        old.state, old.ended_at = "retired", now
        session.flush()
    row.state, row.activated_at = "active", now
    session.add(row)
    node.publish_due_at, node.publish_attempts = now, 0
    node.publish_reason = f"new server certificate ({row.source})"
    session.flush()


def pair_issued(session: Session, job: SigningJob, certificate: x509.Certificate,
                now: dt.datetime) -> NodeCredential | None:
    """Called in the signing transaction: the certificate a node's CSR job produced becomes
    that node's active certificate, with the key kept for the CSR. A job whose CSR was
    discarded meanwhile pairs with nothing (the certificate stays in the index)."""
    row = session.scalar(select(NodeCredential).where(NodeCredential.job_id == job.id,
                                                      NodeCredential.state == "pending"))
    if row is None:
        return None
    if spki_sha256(certificate.public_key()) != row.spki_sha256:
        return None  # cannot happen for a CSR built from the key; never pair a stranger
    row.cert_der = certificate.public_bytes(serialization.Encoding.DER)
    _activate(session, row.node, row, now)
    return row


def upload(session: Session, node: ExpresswayNode, cert_data: bytes, key_data: bytes | None,
           *, passphrase: bytes, trusted, now: dt.datetime) -> tuple[NodeCredential,
                                                                    CheckedServerCertificate]:
    """A server certificate made elsewhere (Microsoft CA, a third party): with its key, or
    for the CSR in progress (its key is pkiq's). Checked as Expressway checks an upload."""
    waiting = pending(session, node)
    pending_key = None
    if waiting is not None and key_data is None:
        pending_key = decrypt_key(waiting.key_pem, passphrase, f"the key of {node.fqdn}'s CSR")
    checked = check_server_upload(cert_data, key_data, node_fqdn=node.fqdn,
                                  csr_in_progress=waiting is not None, now=now,
                                  pending_key=pending_key, trusted=trusted)
    cert_der = checked.certificate.public_bytes(serialization.Encoding.DER)
    chain_pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode()
                        for c in checked.chain) or None
    if pending_key is not None:
        row = waiting
        row.cert_der, row.chain_pem, row.warnings = cert_der, chain_pem, list(checked.warnings)
    else:
        key = checked.private_key
        if key is None:
            raise PolicyViolation(f"no private key given for {node.fqdn}, and no CSR is in "
                                  "progress: upload the key with the certificate (--key)",
                                  "privateKey", "required")
        row = NodeCredential(
            node_id=node.id, source="uploaded",
            key_type=describe_key(key.public_key()).lower().replace(" ", ""),
            key_pem=reencrypt_key(key, passphrase), spki_sha256=spki_sha256(key.public_key()),
            cert_der=cert_der, chain_pem=chain_pem, warnings=list(checked.warnings),
            created_at=now)
    _activate(session, node, row, now)
    return row, checked


def private_key(row: NodeCredential, passphrase: bytes | None):
    return decrypt_key(row.key_pem, passphrase, f"the server key of node {row.node.fqdn}")


def certificate(row: NodeCredential) -> x509.Certificate | None:
    return x509.load_der_x509_certificate(row.cert_der) if row.cert_der else None


def chain(row: NodeCredential) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(row.chain_pem.encode()) if row.chain_pem else []


def history(session: Session, node: ExpresswayNode, limit: int = 20) -> list[NodeCredential]:
    return list(session.scalars(select(NodeCredential).where(
        NodeCredential.node_id == node.id).order_by(NodeCredential.id.desc()).limit(limit)))
