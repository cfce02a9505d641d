"""Signing jobs: requests queued for a CA, approved where its policy says so, signed once.

The job row is the truth; a broker message only says "look at job N". ``run_job`` takes the
row lock, so however often a message is delivered, one delivery signs and the others find
the job finished. Certificate, serial and job state commit in the caller's one transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from .authority import get_ca, sign_csr
from .csr import load_csr
from .errors import BadInput, Conflict, NotFound, PkiqError
from .keys import Signer
from .models import CertificateAuthority, SigningJob
from .names import openssl_oneline
from .profiles import get_profile

STATES = ("awaiting_approval", "queued", "signing", "issued", "rejected", "failed")
ACTIVE = ("queued", "signing")  # a worker still owes these an answer
FINISHED = ("issued", "rejected", "failed")
APPROVAL_MODES = ("auto", "manual")
MAX_ERROR = 2000


@dataclass
class Submitted:
    job: SigningJob
    created: bool  # False: the same request was already there


def request_fingerprint(csr_der: bytes) -> str:
    return hashlib.sha256(csr_der).hexdigest()


def submit(session: Session, ca: CertificateAuthority, csr_data: bytes, *, profile: str,
           requester: str, now: dt.datetime, days: int | None = None,
           node: str | None = None) -> Submitted:
    """Queue a request (or find it queued already). The request must parse and its signature
    verify now; the CA's policy is applied when it is signed."""
    get_profile(profile)
    csr = load_csr(csr_data)
    der = csr.public_bytes(serialization.Encoding.DER)
    digest = request_fingerprint(der)
    existing = _existing(session, ca, profile, digest)
    if existing is not None:
        return Submitted(existing, False)
    job = SigningJob(
        ca_id=ca.id, profile=profile, days=days, node=node, requester=requester,
        csr_der=der, csr_sha256=digest, subject=openssl_oneline(csr.subject),
        state="awaiting_approval" if ca.approval == "manual" else "queued", attempts=0,
        submitted_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:  # a concurrent submit of the same request won the race
        return Submitted(_existing(session, ca, profile, digest), False)
    return Submitted(job, True)


def _existing(session, ca, profile, digest) -> SigningJob | None:
    return session.scalar(select(SigningJob).where(
        SigningJob.ca_id == ca.id, SigningJob.profile == profile,
        SigningJob.csr_sha256 == digest))


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> SigningJob:
    query = select(SigningJob).where(SigningJob.id == job_id)
    job = session.scalar(query.with_for_update() if for_update else query)
    if job is None:
        raise NotFound(f"no signing job {job_id}")
    return job


def list_jobs(session: Session, *, state: str | None = None, ca_name: str | None = None,
              limit: int = 200) -> list[SigningJob]:
    query = select(SigningJob).order_by(SigningJob.id.desc()).limit(limit)
    if state is not None:
        if state not in STATES:
            raise BadInput(f"unknown job state {state!r}; use one of {', '.join(STATES)}")
        query = query.where(SigningJob.state == state)
    if ca_name is not None:
        query = query.where(SigningJob.ca_id == get_ca(session, ca_name).id)
    return list(session.scalars(query))


def _decide(session: Session, job_id: int, *, to: str, by: str, now: dt.datetime,
            reason: str | None = None) -> SigningJob:
    job = get_job(session, job_id, for_update=True)
    if job.state != "awaiting_approval":
        raise Conflict(f"job {job_id} is {job.state}, not awaiting approval")
    job.state, job.decided_by, job.updated_at = to, by, now
    if to == "rejected":
        job.error, job.finished_at = (reason or "rejected by an approver")[:MAX_ERROR], now
    session.flush()
    return job


def approve(session: Session, job_id: int, *, by: str, now: dt.datetime) -> SigningJob:
    return _decide(session, job_id, to="queued", by=by, now=now)


def reject(session: Session, job_id: int, *, by: str, now: dt.datetime,
           reason: str | None = None) -> SigningJob:
    return _decide(session, job_id, to="rejected", by=by, now=now, reason=reason)


def retry(session: Session, job_id: int, *, now: dt.datetime) -> SigningJob:
    """Queue a failed job again (after fixing the CA's policy, passphrase, ...)."""
    job = get_job(session, job_id, for_update=True)
    if job.state != "failed":
        raise Conflict(f"job {job_id} is {job.state}; only failed jobs can be retried")
    job.state, job.error, job.finished_at, job.updated_at = "queued", None, None, now
    session.flush()
    return job


def run_job(session: Session, job_id: int, signer_for: Callable[[CertificateAuthority], Signer],
            clock: Callable[[], dt.datetime]) -> SigningJob | None:
    """Sign one job, exactly once. Returns the job (None if it does not exist).

    Errors that retrying cannot mend (the request breaks the policy, the CA expired, the key
    cannot be unlocked) end the job as ``failed`` with the reason; anything else (the
    database or the broker went away) propagates, the transaction rolls back, and the job
    stays as it was for a retry or the reconciler."""
    job = session.scalar(select(SigningJob).where(SigningJob.id == job_id)
                         .options(joinedload(SigningJob.ca)).with_for_update(of=SigningJob))
    if job is None or job.state not in ACTIVE:
        return job  # finished already (a redelivery), or not approved yet
    # No "signing" write here: inside this transaction nobody else could see it, and the
    # row lock already tells a concurrent delivery to wait. A refused request writes nothing
    # that matters before it raises (at most an expired entry marked E, which is true anyway).
    job.attempts += 1
    try:
        result = sign_csr(session, job.ca, signer_for(job.ca), job.csr_der,
                          profile=job.profile, days=job.days, now=clock())
    except PkiqError as exc:
        job.state, job.error = "failed", str(exc)[:MAX_ERROR]
    else:
        job.state, job.serial, job.error = "issued", result.record.serial, None
    job.finished_at = job.updated_at = clock()  # after signing: what latency should measure
    session.flush()
    return job


def stale_jobs(session: Session, now: dt.datetime, timeout: dt.timedelta,
               limit: int = 1000) -> list[int]:
    """Jobs queued or signing for longer than ``timeout``: their message was lost (a broker
    restart) or their worker died. Their clock restarts so each is re-sent once per timeout."""
    ids = list(session.scalars(
        select(SigningJob.id).where(SigningJob.state.in_(ACTIVE),
                                    SigningJob.updated_at < now - timeout)
        .order_by(SigningJob.id).limit(limit)))
    if ids:
        session.execute(update(SigningJob).where(SigningJob.id.in_(ids))
                        .values(updated_at=now))
    return ids


def job_info(job: SigningJob) -> dict:
    return {
        "id": job.id, "ca": job.ca.name, "profile": job.profile, "state": job.state,
        "subject": job.subject, "requester": job.requester, "node": job.node,
        "days": job.days, "attempts": job.attempts, "error": job.error, "serial": job.serial,
        "decided_by": job.decided_by, "submitted_at": job.submitted_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
