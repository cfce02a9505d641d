"""The beat tick: is the nightly refresh due, do pkiq's CRLs need renewing, who must hear
about what. Every decision reads the database and an injected clock, so a schedule change
takes effect on the next tick without restarting beat, and tests drive time by hand."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca import crl_config
from ca.keys import Signer
from ca.models import CertificateAuthority
from shell.db import transaction

from . import refresh as refresh_mod
from . import schedule, upkeep
from .models import RefreshRun

log = logging.getLogger("pkiq.scheduler")
ON_TIME = dt.timedelta(minutes=10)  # a run later than this after its slot was "missed"


@dataclass
class TickReport:
    refresh: refresh_mod.RefreshReport | None = None
    skipped: str | None = None  # why no refresh ran although one was due
    own_crls: list[upkeep.OwnCrlOutcome] = field(default_factory=list)
    responders: list[upkeep.ResponderOutcome] = field(default_factory=list)
    alerted: list[str] = field(default_factory=list)


def last_scheduled(session: Session) -> dt.datetime | None:
    return session.scalar(select(func.max(RefreshRun.scheduled_for)))


def last_run(session: Session) -> dict | None:
    run = session.scalar(select(RefreshRun).order_by(RefreshRun.id.desc()).limit(1))
    if run is None:
        return None
    return {"trigger": run.trigger, "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
            "summary": run.summary}


def due_slot(session: Session, now: dt.datetime,
             policy: crl_config.CrlPolicy | None = None) -> dt.datetime | None:
    """The slot the nightly refresh owes now, under ``policy`` (default: as the settings are
    now), or None."""
    return _slots(session, now, policy)[0]


def next_run(session: Session, now: dt.datetime) -> dt.datetime | None:
    owed, upcoming = _slots(session, now)
    return now if owed is not None else upcoming  # owed: beat starts it on its next tick


def _slots(session: Session, now: dt.datetime, policy: crl_config.CrlPolicy | None = None
           ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(the slot owed now, the next one); both None while automatic updates are off."""
    policy = policy or crl_config.snapshot(session, now)
    if not policy.enabled:
        return None, None
    offset = schedule.spread_offset(policy.spread_seconds, policy.seed)
    return (schedule.due(policy.update_time, now, last_scheduled(session), offset),
            schedule.next_slot(policy.update_time, now, offset))


def tick(sessions: sessionmaker, clock: Callable[[], dt.datetime], *,
         signer_for: Callable[[CertificateAuthority], Signer] | None, send: Callable,
         sleep=None, network: crl_config.CrlNetwork | None = None,
         min_overlap: dt.timedelta = dt.timedelta(0),
         passphrase: bytes | None = None) -> TickReport:
    """One beat tick. ``signer_for(ca)`` loads a CA's key (None: own CRLs are not renewed
    here, and say so as a problem); ``send(problem, severity)`` delivers an alert;
    ``network``: the fetches' proxy and internal-network settings; ``min_overlap``: renew
    pkiq's own CRLs at least this long before their nextUpdate (the stores' CRL headroom,
    so a store never carries a CRL of ours with less left than it asks for);
    ``passphrase``: the CA passphrase, which OCSP responder keys are encrypted under (None:
    responder certificates are not renewed here; without it the CA keys do not unlock
    either, and the CRLs' alert says so)."""
    report = TickReport()
    with transaction(sessions) as session:  # the settings, once: one tick, one set of them
        policy = crl_config.snapshot(session, clock())
        slot = due_slot(session, clock(), policy)
    if slot is not None:
        trigger = "schedule" if clock() - slot <= ON_TIME else "missed"
        kwargs = {"sleep": sleep} if sleep else {}
        if network is not None:
            kwargs["network"] = network
        try:
            report.refresh = refresh_mod.refresh(
                sessions, clock, trigger=trigger, scheduled_for=slot, policy=policy,
                still_due=lambda s: due_slot(s, clock(), policy) == slot, **kwargs)
        except refresh_mod.RefreshBusy as exc:
            report.skipped = str(exc)
            log.info("nightly CRL refresh not started: %s", exc)
        except Exception as exc:  # noqa: BLE001 - own CRLs and alerts must still run
            report.skipped = f"the refresh failed: {type(exc).__name__}: {exc}"
            log.exception("nightly CRL refresh failed")
        if report.refresh is None and report.skipped is None:
            report.skipped = "another beat ran this slot's refresh already"
    if signer_for is not None:
        with transaction(sessions) as session:
            report.own_crls = upkeep.renew_own_crls(
                session, signer_for, clock(), max(policy.overlap, min_overlap),
                force=report.refresh is not None)
    if signer_for is not None and passphrase is not None:
        with transaction(sessions) as session:
            report.responders = upkeep.renew_responders(session, signer_for, passphrase,
                                                        clock())
    with transaction(sessions) as session:
        found = upkeep.problems(session, clock(), policy.warn, report.own_crls,
                                report.responders)
        outgoing = upkeep.plan_alerts(session, found, clock())
    if outgoing:
        results = upkeep.deliver_alerts(outgoing, send)
        with transaction(sessions) as session:
            upkeep.record_deliveries(session, results)
    report.alerted = [alert.key for alert in outgoing]
    return report
