"""OCSP use cases: renewing each CA's delegated responder certificate, and what a responder
process reads to answer (the CA's CertID hashes and responder key, a serial's status, which
statuses changed since it last looked).

The web process signs answers itself with the responder key (``ca.ocsp``), decrypted once
per responder certificate under the CA passphrase; it never holds a CA key. Why not answers
pre-signed by the scheduler instead: a nonce (RFC 8954) can only be echoed by signing after
the request arrives, a serial asked about for the first time has no pre-signed answer, and
a revocation must be answered at once, not after the scheduler's next run."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import select

from ca import authority, ocsp
from ca.keys import decrypt_key
from ca.models import Certificate, CertificateAuthority, OcspInvalidation
from ca.ocsp import Question, Status
from ca.serials import serial_hex
from scheduler import upkeep
from shell.watch import commit_counter

from .context import ServiceContext


def renew_responders(ctx: ServiceContext, *, passphrase: bytes
                     ) -> list[upkeep.ResponderOutcome]:
    """What beat's tick does for responders, now: a responder certificate for every CA in
    service that has none, or whose current one has less than half its life left."""
    signers: dict[int, object] = {}

    def signer_for(ca: CertificateAuthority):
        if ca.id not in signers:
            signers[ca.id] = authority.load_signer(ca, passphrase)
        return signers[ca.id]

    with ctx.transaction() as session:
        return upkeep.renew_responders(session, signer_for, passphrase, ctx.clock())


@dataclass(frozen=True, repr=False)
class Responder:
    """What answering for one CA takes: its id and CertID hashes per algorithm, its
    responder certificate and unlocked key (None when it has none yet, or the process has
    no passphrase: ``unavailable`` says why), and whether it still answers for the CA at all
    (a CA handed over to ``openssl ca`` changes there: pkiq's index no longer knows)."""

    ca_id: int
    name: str
    hashes: dict[str, tuple[bytes, bytes]]
    handed_over: bool
    cert: x509.Certificate | None
    key: object | None
    unavailable: str | None
    recheck_at: dt.datetime  # when to look for a renewed responder certificate

    def __repr__(self) -> str:  # never print key material, even by accident
        return f"Responder({self.name!r}, cert={self.cert is not None})"

    def usable(self, now: dt.datetime) -> bool:
        """Can it sign an answer at ``now``?"""
        return self.key is not None and self.cert.not_valid_after_utc > now

    def issued_by(self, question: Question) -> bool:
        """Does the CertID name this CA as the issuer (both hashes, per its algorithm)?"""
        return self.hashes.get(question.algorithm) == (question.name_hash, question.key_hash)


RECHECK = dt.timedelta(minutes=1)  # how often a process without a responder looks again


def load_responder(ctx: ServiceContext, name: str, passphrase: bytes | None,
                   known: Responder | None = None) -> Responder:
    """CA ``name``'s responder as it is now (NotFound for no such CA). The PBKDF2 unlock of
    the responder key happens here, once per certificate: the key of ``known`` (what the
    caller loaded last) is taken over when its certificate is still the current one."""
    now = ctx.clock()
    with ctx.read_transaction() as session:
        ca = authority.get_ca(session, name)
        row = ocsp.current_responder(session, ca, now)
        ca_id, handed_over = ca.id, ca.handed_over_at is not None
        hashes = ocsp.issuer_hashes(authority.ca_certificate(ca))
        cert_der = row.cert_der if row is not None else None
        key_pem = row.key_pem if row is not None else None
        half_life = (row.not_before + (row.not_after - row.not_before) / 2
                     if row is not None else now)
    cert = key = unavailable = None
    if cert_der is None:
        unavailable = (f"CA {name!r} has no OCSP responder certificate yet (beat issues "
                       "one; or pkiq ca ocsp-responders)")
    elif not passphrase:
        unavailable = ("this web process has no CA passphrase to unlock the OCSP responder "
                       f"key of CA {name!r} (set PKIQ_CA_PASSPHRASE_FILE)")
    else:
        cert = authority.load_certificate(cert_der)
        if known is not None and known.key is not None and known.cert == cert:
            key = known.key
        else:
            key = decrypt_key(key_pem, passphrase,
                              what=f"the OCSP responder key of CA {name!r}")
    return Responder(ca_id, name, hashes, handed_over, cert, key, unavailable,
                     max(half_life, now + RECHECK) if cert is not None else now + RECHECK)


def status_of(ctx: ServiceContext, ca_id: int, serial: int) -> Status:
    """What the CA's index says of ``serial`` now."""
    with ctx.read_transaction() as session:
        row = session.execute(
            select(Certificate.status, Certificate.revoked_at, Certificate.revocation_reason)
            .where(Certificate.ca_id == ca_id, Certificate.serial == serial_hex(serial))
        ).first() if serial > 0 and serial.bit_length() <= 160 else None
        return Status.of(row)


def sign_answer(responder: Responder, question: Question, status: Status,
                now: dt.datetime) -> tuple[bytes, dt.datetime]:
    """The signed answer (DER) and its nextUpdate (``ca.ocsp.answer``)."""
    return ocsp.answer(question, status, responder_cert=responder.cert,
                       responder_private_key=responder.key, now=now)


def generations(ctx: ServiceContext) -> dict[int, int]:
    """Each CA's ``status_generation``: one small read, the same on every backend."""
    with ctx.read_transaction() as session:
        return dict(session.execute(_GENERATIONS).all())


_GENERATIONS = select(CertificateAuthority.id, CertificateAuthority.status_generation)


class GenerationReader:
    """``generations`` asked on every request (PostgreSQL), on one connection of its own in
    autocommit: one round trip per read instead of BEGIN, SELECT and ROLLBACK through a
    pooled session. A broken connection is dropped and made again on the next read."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self._conn = None
        self._lock = threading.Lock()

    def __call__(self) -> dict[int, int]:
        with self._lock:
            if self._conn is None:
                engine = self.ctx.sessions.kw["bind"]
                self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                return dict(self._conn.execute(_GENERATIONS).all())
            except Exception:
                self.close_connection()
                raise

    def close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._lock:
            self.close_connection()


def changed_serials(ctx: ServiceContext, ca_id: int, after: int, upto: int) -> set[int] | None:
    """The serials whose status changed in generations ``after``+1 .. ``upto`` of the CA;
    None when some of those generations are not listed (pruned): then drop everything."""
    with ctx.read_transaction() as session:
        rows = session.execute(
            select(OcspInvalidation.generation, OcspInvalidation.serial)
            .where(OcspInvalidation.ca_id == ca_id, OcspInvalidation.generation > after,
                   OcspInvalidation.generation <= upto)).all()
    if len({generation for generation, _ in rows}) != upto - after:
        return None
    return {int(serial, 16) for _, serial in rows}


def commit_watch(ctx: ServiceContext):
    """``shell.watch.commit_counter`` over the context's database: a function whose value
    changes when another process committed (SQLite), or None (PostgreSQL: read
    ``generations`` instead)."""
    return commit_counter(ctx.sessions.kw["bind"])
