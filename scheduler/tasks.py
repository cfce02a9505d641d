"""Thin Celery tasks for beat: one tick in, one call into ``scheduler.service``."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task

from ca.errors import PkiqError
from worker.app import app
from worker.tasks import process_sessions, signer_for

from . import service
from .notifications import sender, undeliverable

log = logging.getLogger("pkiq.scheduler")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@shared_task(acks_late=True, ignore_result=True)
def tick() -> dict:
    """Nightly refresh when due, own CRLs before they lapse, alerts once per problem."""
    settings = app.conf.pkiq_settings
    try:
        send = sender(settings.alert_config(), utc_now)
    except PkiqError as exc:  # a channel typo must not stop the CRL refresh itself
        log.error("alert channels are misconfigured, alerts are not delivered: %s", exc)
        send = undeliverable(f"alert channels are misconfigured: {exc}")
    # Without a passphrase signer_for raises WrongPassphrase for the CA that needs a CRL:
    # that becomes an alert ("cannot renew the CRL of pkiq CA ..."), not a failed tick.
    report = service.tick(process_sessions(), utc_now, signer_for=signer_for, send=send)
    if report.refresh is not None:
        log.info("CRL refresh %s: %s", report.refresh.trigger, report.refresh.summary())
    return {"refresh": report.refresh.summary() if report.refresh else None,
            "skipped": report.skipped, "own_crls": report.own_crls,
            "alerted": report.alerted}
