"""Signing jobs: requests queued for a CA, approved where its policy says so, signed once.

The job row is the truth; a broker message only says "look at jobs N, M, ...". A worker
claims the jobs it is sent (``claim_jobs``: state ``signing``, under the rows' locks), signs
them holding no lock (``sign_claimed``) and records them (``record_claimed``), so however
often a message is delivered, one delivery signs and the others find the jobs claimed or
finished. Certificates and job states commit together in the recording transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from . import audit
from .audit import Actor
from .authority import (
    PendingCertificates,
    SignResult,
    check_in_service,
    check_request,
    get_ca,
    lock_in_service,
    sign_csr,
    signing_inputs,
)
from .csr import load_csr
from .errors import BadInput, Conflict, NotFound, PkiqError
from .keys import Signer
from .models import CertificateAuthority, SigningJob
from .names import canonical_name, openssl_oneline
from .node_credentials import pair_issued
from .profiles import get_profile
from .sql import InsertIgnoringConflicts

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
    """Queue a request (or find it queued already). The request must parse, its signature
    verify and it must pass the profile's and the Expressway rules now; the CA's policy is
    applied when it is signed."""
    [done] = submit_many(session, ca, [csr_data], profile=profile, requester=requester,
                         now=now, days=days, node=node)
    if isinstance(done, PkiqError):
        raise done
    return done


@dataclass(frozen=True)
class Prepared:
    """A request parsed, its signature verified and checked against a profile: what a job
    row needs, made without a transaction (a batch's CPU work then holds no writer lock)."""

    csr_der: bytes
    digest: str
    subject: str
    copy_mode: str  # the CA setting it was checked under (``copy_extensions``)


def prepare_requests(requests: Sequence[bytes], *, profile: str,
                     copy_mode: str) -> list[Prepared | PkiqError]:
    """One answer per request in its place: ``Prepared``, or the error that refused it (it
    does not parse, its signature does not verify, the profile or Expressway rules refuse
    it). Needs no database: the CA's ``copy_extensions`` is all it reads of the CA."""
    prof = get_profile(profile)
    out: list[Prepared | PkiqError] = []
    for data in requests:
        try:
            csr = load_csr(data)
            subject = csr.subject  # made anew at each read of the attribute: read it once
            check_request(csr, prof, copy_mode, canonical_name(subject))
        except PkiqError as exc:
            out.append(exc)
            continue
        der = csr.public_bytes(serialization.Encoding.DER)
        out.append(Prepared(der, request_fingerprint(der), openssl_oneline(subject), copy_mode))
    return out


def submit_many(session: Session, ca: CertificateAuthority,
                requests: Sequence[bytes | Prepared | PkiqError], *, profile: str, requester: str,
                now: dt.datetime, days: int | None = None,
                node: str | None = None) -> list[Submitted | PkiqError]:
    """Queue many requests in the caller's one transaction, one answer per request in its
    place: ``Submitted``, or the error that refused it. Requests may come prepared
    (``prepare_requests``, outside the transaction, errors included); one prepared under another
    ``copy_extensions`` than the CA's now is checked again. New jobs are written by one
    ``INSERT ... ON CONFLICT DO NOTHING`` and those already there (submitted before, by a
    concurrent submit, or twice in ``requests``) are found by one query, so a large submit
    costs a few statements, not a few per request."""
    state = "awaiting_approval" if ca.approval == "manual" else "queued"
    raw = [place for place, r in enumerate(requests) if isinstance(r, bytes) or (
        isinstance(r, Prepared) and r.copy_mode != ca.copy_extensions)]
    ready: list[Prepared | PkiqError] = list(requests)  # type: ignore[arg-type]
    for place, prepared in zip(raw, prepare_requests(
            [_request_bytes(requests[p]) for p in raw], profile=profile,
            copy_mode=ca.copy_extensions), strict=True):
        ready[place] = prepared
    out: list[Submitted | PkiqError | None] = [None] * len(requests)
    values: dict[str, dict] = {}  # fingerprint -> the new row, in request order
    where: dict[str, list[int]] = {}  # fingerprint -> its places in ``requests``
    for place, prepared in enumerate(ready):
        if isinstance(prepared, PkiqError):
            out[place] = prepared
            continue
        where.setdefault(prepared.digest, []).append(place)
        values.setdefault(prepared.digest, dict(
            ca_id=ca.id, profile=profile, days=days, node=node, requester=requester,
            csr_der=prepared.csr_der, csr_sha256=prepared.digest, subject=prepared.subject,
            state=state, attempts=0, submitted_at=now, updated_at=now))
    if not values:
        return out
    inserted = dict(_INSERT_JOB.execute(session, list(values.values())).all())
    jobs_by_digest: dict[str, SigningJob] = {}
    for digest, job_id in inserted.items():
        job = SigningJob(id=job_id, error=None, serial=None, decided_by=None,
                         finished_at=None, **values[digest])
        job.ca = ca  # for ``job_info``; the row is written already, this copy is transient
        jobs_by_digest[digest] = job
    taken = [d for d in values if d not in inserted]
    if taken:  # already there: one query for all of them
        jobs_by_digest.update((job.csr_sha256, job) for job in session.scalars(
            select(SigningJob).where(SigningJob.ca_id == ca.id, SigningJob.profile == profile,
                                     SigningJob.csr_sha256.in_(taken))))
    for digest, places in where.items():
        job = jobs_by_digest[digest]
        for place in places:
            out[place] = Submitted(job, digest in inserted and place == places[0])
    return out


def _request_bytes(request: bytes | Prepared) -> bytes:
    return request.csr_der if isinstance(request, Prepared) else request


# a request already queued is skipped, then looked up
_INSERT_JOB = InsertIgnoringConflicts(SigningJob.__table__, SigningJob.__table__.c.csr_sha256,
                                      SigningJob.__table__.c.id)


MAX_ID = 2**31 - 1  # the id columns are 32-bit integers


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> SigningJob:
    if not 0 < job_id <= MAX_ID:  # PostgreSQL refuses to compare a column with a bigger one
        raise NotFound(f"no signing job {job_id}")
    query = select(SigningJob).where(SigningJob.id == job_id)
    job = session.scalar(query.with_for_update() if for_update else query)
    if job is None:
        raise NotFound(f"no signing job {job_id}")
    return job


def list_jobs(session: Session, *, state: str | None = None, ca_name: str | None = None,
              limit: int = 200, requester: str | None = None,
              ca_names: Sequence[str] | None = None) -> list[SigningJob]:
    """Newest first. ``requester``: only that requester's; ``ca_names``: only those CAs'
    (an API token limited to them)."""
    query = select(SigningJob).order_by(SigningJob.id.desc()).limit(limit)
    if requester is not None:
        query = query.where(SigningJob.requester == requester)
    if ca_names is not None:
        query = query.where(SigningJob.ca_id.in_(
            select(CertificateAuthority.id).where(CertificateAuthority.name.in_(ca_names))))
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

    Unlike ``run_jobs`` this waits for the row lock when another transaction holds the job,
    so the job it returns is finished whoever signed it, or claimed by a worker signing it
    apart (SQLite, ``service.jobs.sign_batch``), whose record is the one that counts."""
    job = session.scalar(select(SigningJob).where(SigningJob.id == job_id)
                         .options(joinedload(SigningJob.ca)).with_for_update(of=SigningJob))
    if job is None or job.state != "queued":
        return job  # finished already (a redelivery), not approved yet, or claimed
    job.attempts += 1
    _sign(session, job, signer_for, clock)
    session.flush()
    return job


def run_jobs(session: Session, job_ids: Sequence[int],
             signer_for: Callable[[CertificateAuthority], Signer],
             clock: Callable[[], dt.datetime], actor: Actor | None = None
             ) -> list[SigningJob]:
    """Sign those of ``job_ids`` still owed, each exactly once, all in the caller's one
    transaction: ``claim_jobs``, ``sign_claimed`` and ``record_claimed`` in a row, the locks
    held throughout. Workers on PostgreSQL sign this way; on SQLite they run the same steps
    in three transactions (``service.jobs.sign_batch``), so that the database's one writer
    lock is not held while they sign."""
    claim = claim_jobs(session, job_ids, clock())
    sign_claimed(claim, signer_for, clock)
    return record_claimed(session, claim, signer_for, clock, actor)


CLAIM_LEASE = dt.timedelta(minutes=5)  # a claim older than this is taken to be abandoned


@dataclass
class Claim:
    """Jobs taken for signing (state ``signing``) by ``claim_jobs``. Each job's ``attempts``
    as claimed is the claim's token: ``record_claimed`` writes only jobs still ``signing``
    with that count, so a claim given back (``release_claimed``, the reconciler) and taken
    by another worker meanwhile is not recorded twice."""

    jobs: list[SigningJob]
    pending: PendingCertificates  # the sequential CAs' blocks of serials
    inputs: dict[int, tuple]  # authority.signing_inputs of each CA, as claimed
    signed: dict[int, SignResult | PkiqError] = field(default_factory=dict)

    def tokens(self) -> dict[int, int]:
        return {job.id: job.attempts for job in self.jobs}


def claim_jobs(session: Session, job_ids: Sequence[int], now: dt.datetime,
               lease: dt.timedelta = CLAIM_LEASE, *, reserve_apart: bool = True) -> Claim:
    """Take the jobs of ``job_ids`` still queued (or claimed longer than ``lease`` ago by a
    worker that died) and mark them ``signing``; a block of serials per sequential CA
    (``reserve_apart``: in a transaction of its own, see ``reserve_serials_apart``; false
    when the caller's transaction is itself short and commits before the signing).

    One query finds and locks them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the
    transaction holds the writer lock already). Jobs finished, awaiting approval or gone are
    left out, so a redelivered message costs that one indexed query. A job another
    transaction holds, or another worker has claimed, is left out too without waiting: that
    worker's message names it, and the reconciler re-sends it should that worker die."""
    ids = sorted(set(job_ids))
    claimable = or_(SigningJob.state == "queued",
                    and_(SigningJob.state == "signing", SigningJob.updated_at < now - lease))
    claimed = list(session.scalars(
        select(SigningJob).where(SigningJob.id.in_(ids), claimable).order_by(SigningJob.id)
        .with_for_update(of=SigningJob, skip_locked=True))) if ids else []
    if claimed:  # one statement, not one ORM update per job
        session.execute(update(SigningJob).where(SigningJob.id.in_([j.id for j in claimed]))
                        .values(state="signing", attempts=SigningJob.attempts + 1,
                                updated_at=now).execution_options(synchronize_session=False))
    for job in claimed:
        for name, value in (("state", "signing"), ("attempts", job.attempts + 1),
                            ("updated_at", now)):
            set_committed_value(job, name, value)
    pending = PendingCertificates(apart=True)
    _reserve_serials(session, claimed, pending, apart=reserve_apart)  # loads each job's CA
    return Claim(claimed, pending, {job.ca.id: signing_inputs(job.ca) for job in claimed})


def sign_claimed(claim: Claim, signer_for: Callable[[CertificateAuthority], Signer],
                 clock: Callable[[], dt.datetime]) -> None:
    """Sign the claim's jobs with no database at hand, results into ``claim.signed``: a
    certificate, or the error that refuses the request (policy, Expressway rules, a CA
    expired or handed over, a key that cannot be unlocked). Jobs of unique_subject CAs
    (whose check reads the index), of sequential CAs that got no block, and jobs nobody can
    sign apart are left to ``record_claimed``, which signs them in its transaction."""
    for job in claim.jobs:
        ca = job.ca
        if ca.unique_subject or not claim.pending.has_serials_for(ca):
            continue
        try:
            check_in_service(ca)
            claim.signed[job.id] = sign_csr(
                None, ca, signer_for(ca), job.csr_der, profile=job.profile, days=job.days,
                now=clock(), pending=claim.pending, verified=True)  # at submit (submit_many)
        except PkiqError as exc:
            claim.signed[job.id] = exc


def record_claimed(session: Session, claim: Claim,
                   signer_for: Callable[[CertificateAuthority], Signer],
                   clock: Callable[[], dt.datetime], actor: Actor | None = None
                   ) -> list[SigningJob]:
    """Write what ``sign_claimed`` made, in one transaction: the certificates in one
    statement, the jobs' states, one turn of the audit head. Returns the jobs recorded.

    Each CA is held first (``lock_in_service``: one handed over meanwhile fails its jobs),
    and a CA whose signing settings changed since the claim has its jobs signed again
    here, as are jobs ``sign_claimed`` left. Jobs no longer held by this claim are left
    alone (their signatures dropped, never written). ``BatchConflict`` (a serial taken
    after all) propagates: the caller rolls back and signs the jobs one at a time."""
    tokens = claim.tokens()
    if not tokens:
        return []
    held = session.execute(
        select(SigningJob.id, SigningJob.attempts)
        .where(SigningJob.id.in_(sorted(tokens)), SigningJob.state == "signing")
        .order_by(SigningJob.id).with_for_update(of=SigningJob))
    mine = {job_id for job_id, attempts in held if attempts == tokens[job_id]}
    ours = [job for job in claim.jobs if job.id in mine]
    pending = PendingCertificates(serials=claim.pending.serials)
    refused: dict[int, PkiqError] = {}
    current: set[int] = set()
    for ca_id in sorted({job.ca_id for job in ours}):
        ca = session.get(CertificateAuthority, ca_id)  # as this transaction sees it
        try:
            lock_in_service(session, ca)
        except PkiqError as exc:
            refused[ca_id] = exc
            continue
        pending.in_service.add(ca_id)
        if claim.inputs.get(ca_id) == signing_inputs(ca):
            current.add(ca_id)
    recorded, finished = [], []
    for job in ours:
        outcome = refused.get(job.ca_id) or (
            claim.signed.get(job.id) if job.ca_id in current else None)
        if outcome is None:  # signed here, as run_job would
            job = session.get(SigningJob, job.id)
            _sign(session, job, signer_for, clock, pending)
        else:  # the claim's own copy of the job, written with one statement for all
            values = _outcome(session, job, outcome, pending, clock())
            for name, value in values.items():
                set_committed_value(job, name, value)
            finished.append({f"b_{name}": value for name, value in values.items()}
                            | {"b_id": job.id})
        recorded.append(job)
    if finished:
        session.execute(_FINISH, finished)
    pending.write(session)  # BatchConflict (rare): the caller goes one job at a time
    session.flush()
    if actor is not None and recorded:  # one turn of the audit head for the batch
        audit.record_many(session, actor, [_issue_entry(job) for job in recorded], clock())
    return recorded


_JOBS = SigningJob.__table__
_FINISH = update(_JOBS).where(_JOBS.c.id == bindparam("b_id")).values(
    {name: bindparam(f"b_{name}", type_=_JOBS.c[name].type)
     for name in ("state", "serial", "error", "finished_at", "updated_at")})


def release_claimed(session: Session, claim: Claim, now: dt.datetime) -> None:
    """Give the claim's jobs back (``queued``) when signing or recording them broke, so
    that they can be signed again at once rather than after the lease; only those still as
    this claim left them. The attempt is not counted, as a rolled-back one never was: the
    token may come round again, and only the claimant, which records nothing after, gives
    a claim back."""
    for job_id, attempts in claim.tokens().items():
        session.execute(update(SigningJob).where(
            SigningJob.id == job_id, SigningJob.state == "signing",
            SigningJob.attempts == attempts).values(state="queued", updated_at=now,
                                                    attempts=attempts - 1))


def _reserve_serials(session: Session, claimed: Sequence[SigningJob],
                     pending: PendingCertificates, *, apart: bool = True) -> None:
    """One block of serials per sequential CA for the batch, each taken in one short step
    before the first signature (``authority.reserve_serials_apart``), not one locked
    increment per job held to the commit. A CA that cannot give its block (handed over,
    out of serials) gets none: each of its jobs then fails with the reason, or takes one of
    the serials left, as it would alone."""
    counts = Counter(job.ca for job in claimed if job.ca.serial_mode == "sequential")
    for ca, count in counts.items():
        with suppress(PkiqError):
            pending.reserve_serials(session, ca, count, apart=apart)


def _issue_entry(job: SigningJob) -> tuple[str, str, dict]:
    if job.state == "issued":
        return ("cert.issue", f"ca:{job.ca.name}/serial:{job.serial}",
                {"job": job.id, "subject": job.subject, "profile": job.profile,
                 "requester": job.requester, "node": job.node})
    return ("job.fail", f"job:{job.id}", {"ca": job.ca.name, "error": job.error})


def _sign(session: Session, job: SigningJob,
          signer_for: Callable[[CertificateAuthority], Signer],
          clock: Callable[[], dt.datetime], pending: PendingCertificates | None = None) -> None:
    """Sign ``job`` in the caller's transaction. A refused request writes nothing that
    matters before it raises (at most an expired entry marked E, which is true anyway, or a
    sequential serial left unused)."""
    try:
        result = sign_csr(session, job.ca, signer_for(job.ca), job.csr_der,
                          profile=job.profile, days=job.days, now=clock(), pending=pending,
                          verified=True)  # at submit (submit_many)
    except PkiqError as exc:
        _record(session, job, exc, pending, clock())
    else:
        _record(session, job, result, None, clock())


def _record(session: Session, job: SigningJob, outcome: SignResult | PkiqError,
            pending: PendingCertificates | None, now: dt.datetime) -> None:
    for name, value in _outcome(session, job, outcome, pending, now).items():
        setattr(job, name, value)


def _outcome(session: Session, job: SigningJob, outcome: SignResult | PkiqError,
             pending: PendingCertificates | None, now: dt.datetime) -> dict:
    """A job's end, as the values its row takes: failed with the reason, or issued (its
    index row into ``pending`` when it was signed apart, and a node's CSR paired with its
    key). ``now``, after signing, is what latency should measure."""
    if isinstance(outcome, PkiqError):
        return {"state": "failed", "serial": job.serial, "error": str(outcome)[:MAX_ERROR],
                "finished_at": now, "updated_at": now}
    if pending is not None and outcome.row is not None:
        pending.rows.append(outcome.row)
    if job.node is not None:  # a node's CSR (pkiq node csr --submit): pair it with its key
        pair_issued(session, job, outcome.certificate, now)
    return {"state": "issued", "serial": outcome.record.serial, "error": None,
            "finished_at": now, "updated_at": now}


def stale_jobs(session: Session, now: dt.datetime, timeout: dt.timedelta,
               limit: int = 1000) -> list[int]:
    """Jobs queued or signing for longer than ``timeout``: their message was lost (a broker
    restart) or their worker died. Their clock restarts so each is re-sent once per timeout,
    and a claim that old is given up (``signing`` back to ``queued``) so that any worker may
    take the job; should its worker still record it, the claim's token no longer matches."""
    ids = list(session.scalars(
        select(SigningJob.id).where(SigningJob.state.in_(ACTIVE),
                                    SigningJob.updated_at < now - timeout)
        .order_by(SigningJob.id).limit(limit)))
    if ids:
        session.execute(update(SigningJob).where(SigningJob.id.in_(ids)).values(
            updated_at=now, state=case((SigningJob.state == "signing", "queued"),
                                       else_=SigningJob.state)))
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
