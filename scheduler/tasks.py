"""Thin Celery tasks for beat: one tick in, one call into ``scheduler.service``."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task

from worker.app import app
from worker.tasks import _sessions, _signer_for

from . import service
from .notifications import sender

log = logging.getLogger("pkiq.scheduler")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@shared_task(acks_late=True, ignore_result=True)
def tick() -> dict:
    """Nightly refresh when due, own CRLs before they lapse, alerts once per problem."""
    settings = app.conf.pkiq_settings
    sign = _signer_for if settings.passphrase() else None
    report = service.tick(_sessions(), utc_now, signer_for=sign,
                          send=sender(settings.alert_config(), utc_now))
    if report.refresh is not None:
        log.info("CRL refresh %s: %s", report.refresh.trigger, report.refresh.summary())
    return {"refresh": report.refresh.summary() if report.refresh else None,
            "skipped": report.skipped, "own_crls": report.own_crls,
            "alerted": report.alerted}
