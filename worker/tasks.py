"""Thin tasks: ids in, one call into ``service.jobs``, ``ca.jobs`` or ``scheduler.tick``,
the transactions around it. The app's settings come from the app running the task
(``current_app``), so nothing here is built at import.

A message names a short list of jobs (at most ``JOBS_PER_MESSAGE``), never their requests:
the database stays the truth. One message per job cost more than the signature itself (the
broker round trip, Celery's bookkeeping and a commit per job); a few dozen per message are
claimed, signed and recorded together and acknowledged once, while a list that short still
spreads a large submit over every worker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Sequence

from celery import current_app, shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from ca import jobs
from ca.audit import Actor
from ca.authority import load_signer
from ca.errors import PkiqError, WrongPassphrase
from ca.keys import Signer
from scheduler import tick
from scheduler.notifications import sender, undeliverable
from scheduler.schedule import (
    CRL_TICK_TASK,
    DRIFT_TASK,
    ROLLOUT_TASK,
    ROLLOUTS_TICK_TASK,
    STORES_TICK_TASK,
)
from service import drift, push, stores
from service.context import ServiceContext
from service.jobs import sign_batch
from shell import metrics
from shell.db import make_engine, migrate, session_factory, transaction
from shell.logs import log_context
from shell.settings import Settings

from .celery_app import RECONCILE_TASK, SIGN_TASK, announce

log = logging.getLogger("pkiq.worker")
_state: dict = {}
TRANSIENT = (OperationalError, InterfaceError)  # the database went away: retry later


def _settings() -> Settings:
    return current_app.conf.pkiq_settings


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def process_sessions():
    """One engine per worker process, made after the fork (a pooled connection must never be
    shared between parent and child)."""
    if _state.get("pid") != os.getpid():
        engine = make_engine(_settings().effective_database_url)
        migrate(engine)
        _state.clear()
        _state.update(pid=os.getpid(), factory=session_factory(engine), signers={})
    return _state["factory"]


def signer_for(ca) -> Signer:
    """CA keys are decrypted once per process and kept in memory only, by CA and public key:
    a key re-encrypted at rest (``ca passwd``, a work-factor upgrade) is the same key, so the
    worker keeps signing with it; it unlocks with its passphrase again only when it restarts.

    A worker never re-encrypts a key here: storing it would lock the CA row for update inside
    a batch of signatures that holds other CAs' rows (a deadlock with another worker).
    ``pkiq worker`` and ``pkiq serve`` upgrade keys when they start (``unlock_check``), and
    every command that unlocks a key does."""
    cache = _state["signers"]
    key = (ca.id, ca.spki_sha256)
    if key not in cache:
        passphrase = _settings().passphrase()
        if not passphrase:
            raise WrongPassphrase(f"the worker has no passphrase for CA {ca.name!r}: set "
                                  "PKIQ_CA_PASSPHRASE_FILE or PKIQ_CA_PASSPHRASE")
        if len(cache) > 64:  # CAs re-keyed many times over: drop the old keys
            cache.clear()
        cache[key] = load_signer(ca, passphrase)
    return cache[key]


def _lease() -> dt.timedelta:
    """A claim is this worker's for as long as the reconciler leaves a job alone."""
    return dt.timedelta(seconds=_settings().job_timeout_seconds)


def _actor() -> Actor:
    if _state.get("actor_pid") != os.getpid():
        _state.update(actor_pid=os.getpid(), actor=Actor.worker())
    return _state["actor"]


# Seconds from submission to the certificate (approval time included), by CA.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


def _run(job_ids: list[int]) -> tuple[int, int]:
    """Claimed, signed and recorded (``service.jobs.sign_batch``); (issued, failed)."""
    done = sign_batch(process_sessions(), job_ids, signer_for, utc_now, _actor(), _lease())
    issued = sum(job.state == "issued" for job in done)
    latencies = []
    for job in done:
        if job.state == "failed":
            log.warning("job %s failed: %s", job.id, job.error,
                        extra={"job_id": job.id, "ca": job.ca.name, "node": job.node})
        elif job.finished_at is not None:
            latencies.append((job.ca.name, (job.finished_at - job.submitted_at).total_seconds()))
    _observe(latencies)  # after the commit: a rolled-back signature is not counted
    return issued, len(done) - issued


def _observe(latencies: list[tuple[str, float]]) -> None:
    """Into the shared metrics folder, when this is a worker that records metrics
    (``shell.metrics.enable`` at its start); a failure here never fails a signature."""
    if not latencies or not metrics.enabled():
        return
    try:
        histogram = metrics.histogram(
            "pkiq_sign_latency_seconds", "Seconds from a job's submission to its "
            "certificate (time awaiting approval included)", ("ca",), LATENCY_BUCKETS)
        for ca_name, seconds in latencies:
            histogram.labels(ca=ca_name).observe(max(seconds, 0.0))
    except Exception:  # noqa: BLE001 - metrics are not worth a job
        log.exception("could not record the sign latency")


@shared_task(name=SIGN_TASK, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True,
             retry_backoff_max=60, max_retries=None)
def sign_jobs(job_ids: list[int]) -> None:
    """Sign the jobs still owed among ``job_ids``; a redelivered message finds them finished.

    Should the batch break in a way no job's own error explains (a bug, a constraint the
    database refuses), it is rolled back and the jobs are tried one per transaction, so one
    bad job cannot hold its neighbours back; its error is raised after the others."""
    try:
        issued, failed = _run(job_ids)
    except TRANSIENT:
        raise
    except Exception:
        if len(job_ids) == 1:
            raise
        log.exception("a batch of %d jobs failed; signing them one at a time", len(job_ids))
        issued, failed = _one_at_a_time(job_ids)
    skipped = len(set(job_ids)) - issued - failed
    log.info("jobs %s: %d issued, %d failed, %d already done or held elsewhere",
             _span(job_ids), issued, failed, skipped)


def _one_at_a_time(job_ids: list[int]) -> tuple[int, int]:
    issued = failed = 0
    first_error = None
    for job_id in job_ids:
        try:
            i, f = _run([job_id])
        except TRANSIENT:
            raise  # the message is retried whole: what was committed is a no-op then
        except Exception as exc:  # noqa: BLE001 - raised below, after the others
            log.exception("job %s could not be signed", job_id)
            first_error = first_error or exc
            continue
        issued, failed = issued + i, failed + f
    if first_error is not None:
        raise first_error
    return issued, failed


@shared_task(name="worker.tasks.sign_job", acks_late=True, autoretry_for=TRANSIENT,
             retry_backoff=True, retry_backoff_max=60, max_retries=None)
def sign_job(job_id: int) -> None:
    """One job per message, as earlier versions sent them (messages still in a queue)."""
    sign_jobs([job_id])


def _span(job_ids: Sequence[int]) -> str:
    return str(job_ids[0]) if len(job_ids) == 1 else f"{min(job_ids)}..{max(job_ids)}"


@shared_task(name=RECONCILE_TASK, acks_late=True)
def reconcile() -> list[int]:
    """Re-send jobs left queued or signing past the timeout (lost message, dead worker)."""
    timeout = dt.timedelta(seconds=_settings().job_timeout_seconds)
    with transaction(process_sessions()) as session:
        stale = jobs.stale_jobs(session, utc_now(), timeout)
    announce(current_app, stale)
    if stale:
        log.warning("reconciler re-sent %d stale job(s): %s", len(stale), stale[:20])
    return stale


@shared_task(name=CRL_TICK_TASK, acks_late=True, ignore_result=True)
def crl_tick() -> dict:
    """Nightly refresh when due, own CRLs before they lapse, alerts once per problem."""
    settings = _settings()
    try:
        send = sender(settings.alert_config(), utc_now)
    except PkiqError as exc:  # a channel typo must not stop the CRL refresh itself
        log.error("alert channels are misconfigured, alerts are not delivered: %s", exc)
        send = undeliverable(f"alert channels are misconfigured: {exc}")
    # Without a passphrase signer_for raises WrongPassphrase for the CA that needs a CRL:
    # that becomes an alert ("cannot renew the CRL of pkiq CA ..."), not a failed tick.
    try:
        passphrase = settings.passphrase()
    except PkiqError as exc:  # as signer_for: an alert per CA that needs a responder
        log.error("no CA passphrase for the OCSP responder keys: %s", exc)
        passphrase = None
    report = tick.tick(process_sessions(), utc_now, signer_for=signer_for, send=send,
                       network=settings.crl_network(),
                       min_overlap=stores.headroom(settings), passphrase=passphrase)
    if report.refresh is not None:
        log.info("CRL refresh %s: %s", report.refresh.trigger, report.refresh.summary())
    return {"refresh": report.refresh.summary() if report.refresh else None,
            "skipped": report.skipped,
            "own_crls": [dataclasses.asdict(outcome) for outcome in report.own_crls],
            "responders": [dataclasses.asdict(outcome) for outcome in report.responders],
            "alerted": report.alerted}


def _service() -> ServiceContext:
    """The use cases' context for this worker process (its own engine, made after the fork)."""
    if _state.get("service_pid") != os.getpid():
        _state.update(service_pid=os.getpid(),
                      service=ServiceContext(_settings(), utc_now, actor=Actor.worker()))
    return _state["service"]


@shared_task(name=STORES_TICK_TASK, acks_late=True, ignore_result=True)
def stores_tick() -> list[dict]:
    """Publish every node store that is due; one node failing is recorded on that node (and
    retried later, with backoff) and never stops the others."""
    try:
        passphrase = _settings().passphrase()
    except PkiqError as exc:  # the nodes' failures below then say so, one per node
        log.error("stores tick: %s", exc)
        passphrase = None
    outcomes = stores.publish(_service(), passphrase=passphrase, due_only=True)
    done = [o.view() for o in outcomes if o.state != "skipped"]
    for outcome in done:
        log.info("store of %s: %s%s", outcome["node"], outcome["state"],
                 f" ({outcome['error']})" if outcome["error"] else "",
                 extra={"node": outcome["node"]})
    return done


def _passphrase_or_none(what: str) -> bytes | None:
    try:
        return _settings().passphrase()
    except PkiqError as exc:  # each node's failure then says so
        log.error("%s: %s", what, exc)
        return None


@shared_task(name=ROLLOUT_TASK, acks_late=True, ignore_result=True)
def advance_rollout(rollout_id: int) -> dict:
    """Push to the rollout's peers until it is done, stops, pauses, or must wait for a
    retry: then the next step is sent for that time (the rollouts tick sends it too, should
    this message be lost)."""
    with log_context(rollout_id=rollout_id):
        view = push.advance(_service(), rollout_id,
                            passphrase=_passphrase_or_none("rollout"))
    if view["state"] == "waiting" and view["next_try_at"]:
        at = dt.datetime.fromisoformat(view["next_try_at"])
        advance_rollout.apply_async(args=[rollout_id], eta=at)
    log.info("rollout %s: %s%s", rollout_id, view["state"],
             f" ({view['error']})" if view["error"] else "")
    return {"rollout": rollout_id, "state": view["state"]}


@shared_task(name=ROLLOUTS_TICK_TASK, acks_late=True, ignore_result=True)
def rollouts_tick() -> list[int]:
    """Rollouts whose retry time came, or whose step a dead worker left, go on."""
    due = push.due(_service(), push.stale_after(_settings()))
    for rollout_id in due:
        advance_rollout.delay(rollout_id)
    return due


@shared_task(name=DRIFT_TASK, acks_late=True, ignore_result=True)
def drift_check() -> list[dict]:
    """Read every node with REST settings and record what differs; the CRL tick turns
    what is recorded into alerts."""
    reports = drift.check(_service(), passphrase=_passphrase_or_none("drift check"))
    for report in reports:
        if not report["in_sync"]:
            log.warning("drift on %s: %d finding(s)", report["node"], len(report["drift"]),
                        extra={"node": report["node"]})
    return reports
