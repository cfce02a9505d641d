"""Thin tasks: a job id in, one call into ``ca.jobs``, the transaction around it."""

from __future__ import annotations

import datetime as dt
import logging
import os

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from ca import jobs
from ca.authority import load_signer
from ca.errors import WrongPassphrase
from pkiq.db import make_engine, migrate, session_factory, transaction

from .app import app

log = logging.getLogger("pkiq.worker")
_state: dict = {}


def _sessions():
    """One engine per worker process, made after the fork (a pooled connection must never be
    shared between parent and child)."""
    if _state.get("pid") != os.getpid():
        settings = app.conf.pkiq_settings
        engine = make_engine(settings.effective_database_url)
        migrate(engine)
        _state.clear()
        _state.update(pid=os.getpid(), factory=session_factory(engine), signers={})
    return _state["factory"]


def _signer_for(ca):
    """CA keys are decrypted once per process and kept in memory only."""
    cache = _state["signers"]
    key = (ca.id, ca.key_pem)
    if key not in cache:
        passphrase = app.conf.pkiq_settings.passphrase()
        if not passphrase:
            raise WrongPassphrase(f"the worker has no passphrase for CA {ca.name!r}: set "
                                  "PKIQ_CA_PASSPHRASE_FILE or PKIQ_CA_PASSPHRASE")
        if len(cache) > 64:  # CAs re-keyed many times over: drop the old keys
            cache.clear()
        cache[key] = load_signer(ca, passphrase)
    return cache[key]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@shared_task(bind=True, acks_late=True, autoretry_for=(OperationalError, InterfaceError),
             retry_backoff=True, retry_backoff_max=60, max_retries=None)
def sign_job(self, job_id: int) -> None:
    """Sign job ``job_id`` if it is still owed; a redelivered message finds it finished."""
    with transaction(_sessions()) as session:
        job = jobs.run_job(session, job_id, _signer_for, now)
        if job is None:
            log.warning("job %s does not exist; message dropped", job_id)
            return
        log.info("job %s: %s%s", job.id, job.state,
                 f" serial {job.serial}" if job.serial else f" ({job.error})" if job.error else "")


@shared_task(acks_late=True)
def reconcile() -> list[int]:
    """Re-send jobs left queued or signing past the timeout (lost message, dead worker)."""
    timeout = dt.timedelta(seconds=app.conf.pkiq_settings.job_timeout_seconds)
    with transaction(_sessions()) as session:
        stale = jobs.stale_jobs(session, now(), timeout)
    for job_id in stale:
        sign_job.delay(job_id)
    if stale:
        log.warning("reconciler re-sent %d stale job(s): %s", len(stale), stale[:20])
    return stale
