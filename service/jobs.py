"""The signing queue's use cases: jobs are written to the database first, then announced on
the broker through the context's announcer; a message that never arrives is re-sent by the
reconciler, so a broker that is down costs time, never a job."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from ca import jobs
from ca.audit import Actor
from ca.authority import check_in_service, get_ca
from ca.errors import PkiqError
from ca.keys import Signer
from ca.models import CertificateAuthority, SigningJob
from shell.db import transaction

from .context import ServiceContext

SUBMIT_CHUNK = 100  # requests per transaction; announced as it commits, so workers start early
SETTLED_OK = ("queued", "awaiting_approval", "signing", "issued")  # a submit that went well
AUDITED_JOB_FIELDS = ("ca", "profile", "state", "subject", "requester", "node", "days")


def announce(ctx: ServiceContext, job_ids: Sequence[int]) -> str | None:
    """Tell the workers; returns a warning when the broker did not take the message (the
    jobs then stay queued for the reconciler) or when nothing can announce them."""
    if not job_ids:
        return None
    if ctx.announcer is None:
        return ("no queue is configured for this command; the reconciler sends the jobs "
                "to the workers")
    try:
        ctx.announcer(list(job_ids))
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the jobs queued
        return (f"the broker did not take the message ({type(exc).__name__}: {exc}); the "
                "jobs stay queued and the reconciler sends them when it is back")
    return None


def check_ca(ctx: ServiceContext, ca_name: str) -> None:
    """An unknown CA, or one handed over to openssl ca, fails a whole submit before anything
    is read or written. A read: it takes no writer lock."""
    with ctx.read_transaction() as session:
        check_in_service(get_ca(session, ca_name))


def _copy_mode_hint(ca_name: str) -> tuple[str, str]:
    return ("copy_extensions", ca_name)


def prepare_known(ctx: ServiceContext, ca_name: str, requests: Sequence[bytes], *,
                  profile: str) -> list[bytes | jobs.Prepared | PkiqError]:
    """``ca.jobs.prepare_requests`` under the copy_extensions the last submit to the CA saw,
    for ``queue_requests`` to take as they are; the requests unchanged when no submit to
    the CA was seen yet (``queue_requests`` then reads the CA and prepares them)."""
    copy_mode = ctx.hints.get(_copy_mode_hint(ca_name))
    if copy_mode is None:
        return list(requests)
    return jobs.prepare_requests(requests, profile=profile, copy_mode=copy_mode)


def queue_requests(ctx: ServiceContext, ca_name: str,
                   requests: Sequence[bytes | jobs.Prepared | PkiqError],
                   *, profile: str, requester: str, days: int | None = None,
                   node: str | None = None) -> tuple[list[dict], str | None]:
    """One chunk of a submit: the requests queued in one transaction, then the new queued
    jobs announced. Returns one row per request (the job's view plus ``new``, or state
    ``refused`` and the error; an error given in place of a request, such as a file that
    could not be read, is reported as is) and the announcer's warning, if any."""
    rows: list[dict] = []
    new_ids: list[int] = []
    readable = [r for r in requests if not isinstance(r, PkiqError)]
    # parsed and verified before the write transaction (on SQLite that holds the one writer
    # lock, which signing workers and other submitters wait for), under the copy_extensions
    # the last submit to this CA saw: the write transaction checks again, so only a CA
    # never seen here costs a read first; requests prepared already (``prepare_known``)
    # are taken as they are
    hint = _copy_mode_hint(ca_name)
    raw = [r for r in readable if not isinstance(r, jobs.Prepared)]
    if raw:
        copy_mode = ctx.hints.get(hint)
        if copy_mode is None:
            with ctx.read_transaction() as session:
                ca = get_ca(session, ca_name)
                check_in_service(ca)
                copy_mode = ca.copy_extensions
        made = iter(jobs.prepare_requests(raw, profile=profile, copy_mode=copy_mode))
        readable = [r if isinstance(r, jobs.Prepared) else next(made) for r in readable]
    with ctx.transaction() as session:
        ca = get_ca(session, ca_name)
        check_in_service(ca)
        ctx.hints[hint] = ca.copy_extensions
        done = iter(jobs.submit_many(session, ca, readable, profile=profile,
                                     requester=requester, days=days, node=node,
                                     now=ctx.clock()))
        for request in requests:
            outcome = request if isinstance(request, PkiqError) else next(done)
            if isinstance(outcome, PkiqError):
                rows.append({"id": None, "state": "refused", "error": str(outcome)})
                continue
            info = jobs.job_info(outcome.job)
            if outcome.created and info["state"] == "queued":
                new_ids.append(info["id"])
            rows.append({"new": outcome.created, **info})
        ctx.audit_many(session, [
            ("job.submit", f"job:{row['id']}", {k: row[k] for k in AUDITED_JOB_FIELDS})
            for row in rows if row.get("new")])
    return rows, announce(ctx, new_ids)


def sign_batch(factory: sessionmaker[Session], job_ids: Sequence[int],
               signer_for: Callable[[CertificateAuthority], Signer],
               clock: Callable[[], dt.datetime], actor: Actor | None = None,
               lease: dt.timedelta = jobs.CLAIM_LEASE, *, apart: bool | None = None
               ) -> list[SigningJob]:
    """A worker's message: the jobs claimed, signed and recorded. Returns the jobs recorded.

    ``apart`` (the default on SQLite): claimed in one short transaction, signed holding no
    lock, recorded in another. A SQLite transaction holds the whole database's writer lock:
    a batch of 25 RSA-4096 signatures held it 25 signatures long (45-165 ms at the sign
    rates in docs/benchmarks.md), and every submit, revocation and CRL waited behind it.
    Should signing or recording break, the claim is given back at once
    (``release_claimed``) for the caller to sign the jobs one at a time; should the worker
    die, the lease runs out (the reconciler).

    Otherwise (the default on PostgreSQL) all in one transaction: the rows it locks keep
    other workers off these jobs only, so splitting it would buy nothing and cost a commit
    and a second read of the jobs per batch."""
    if apart is None:
        apart = factory.kw["bind"].dialect.name == "sqlite"
    if not apart:
        with transaction(factory) as session:
            return jobs.run_jobs(session, job_ids, signer_for, clock, actor)
    with transaction(factory) as session:
        claim = jobs.claim_jobs(session, job_ids, clock(), lease, reserve_apart=False)
    if not claim.jobs:
        return []
    try:
        jobs.sign_claimed(claim, signer_for, clock)
        with transaction(factory) as session:
            return jobs.record_claimed(session, claim, signer_for, clock, actor)
    except BaseException:
        try:
            with transaction(factory) as session:
                jobs.release_claimed(session, claim, clock())
        except Exception:  # noqa: BLE001 - the lease runs out instead; the first error counts
            logging.getLogger("pkiq.jobs").exception("could not give back jobs %s",
                                                     sorted(claim.tokens()))
        raise


def wait_for(ctx: ServiceContext, job_ids: Sequence[int], timeout: float, *,
             poll: float = 0.2, sleep: Callable[[float], None] = time.sleep) -> dict[int, dict]:
    """Each job's view once it has left the active states, or after ``timeout`` seconds
    (its view then carries an ``error`` saying it is still active)."""
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    views: dict[int, dict] = {}
    while True:
        with ctx.transaction() as session:
            for job_id in sorted(pending):
                info = jobs.job_info(jobs.get_job(session, job_id))
                views[job_id] = info
                if info["state"] not in jobs.ACTIVE:
                    pending.discard(job_id)
        if not pending or time.monotonic() >= deadline:
            break
        sleep(poll)
    for job_id in pending:
        views[job_id]["error"] = f"still {views[job_id]['state']} after {timeout:g} s"
    return views


def list_jobs(ctx: ServiceContext, *, state: str | None = None, ca_name: str | None = None,
              limit: int = 200, requester: str | None = None,
              ca_names: Sequence[str] | None = None) -> dict:
    """The newest jobs first; ``truncated`` says when more matched than ``limit``."""
    with ctx.transaction() as session:
        rows = jobs.list_jobs(session, state=state, ca_name=ca_name, limit=limit + 1,
                              requester=requester, ca_names=ca_names)
        return {"jobs": [jobs.job_info(j) for j in rows[:limit]],
                "truncated": len(rows) > limit, "limit": limit}


def show_job(ctx: ServiceContext, job_id: int) -> dict:
    with ctx.transaction() as session:
        return jobs.job_info(jobs.get_job(session, job_id))


def _decide(ctx: ServiceContext, job_ids: Sequence[int], what: str, action, *,
            allowed=None, **kw) -> tuple[list[dict], str | None]:
    """All or nothing in one transaction; the jobs that became queued are announced.
    ``allowed(job)``: raises when the caller may not decide on that job (an API token
    limited to other CAs)."""
    with ctx.transaction() as session:
        infos = []
        for job_id in job_ids:
            if allowed is not None:
                allowed(jobs.get_job(session, job_id))
            infos.append(jobs.job_info(action(session, job_id, **kw)))
        ctx.audit_many(session, [(f"job.{what}", f"job:{i['id']}",
                                  {"ca": i["ca"], "subject": i["subject"], "state": i["state"],
                                   **({"reason": kw["reason"]} if kw.get("reason") else {})})
                                 for i in infos])
    return infos, announce(ctx, [i["id"] for i in infos if i["state"] == "queued"])


def approve(ctx: ServiceContext, job_ids: Sequence[int], *, by: str, allowed=None):
    return _decide(ctx, job_ids, "approve", jobs.approve, allowed=allowed, by=by,
                   now=ctx.clock())


def reject(ctx: ServiceContext, job_ids: Sequence[int], *, by: str, reason: str | None,
           allowed=None):
    return _decide(ctx, job_ids, "reject", jobs.reject, allowed=allowed, by=by,
                   reason=reason, now=ctx.clock())


def retry(ctx: ServiceContext, job_ids: Sequence[int], allowed=None):
    return _decide(ctx, job_ids, "retry", jobs.retry, allowed=allowed, now=ctx.clock())
