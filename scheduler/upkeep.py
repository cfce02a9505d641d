"""What beat checks every tick, independently of the nightly time: pkiq's own CRLs are
renewed before they can lapse (and after a revocation), and open problems are turned into
alerts, once per problem.

A lapsed CRL is the outage users of other CAs report most: every certificate of that CA
then counts as revoked. Renewing at a fixed time alone cannot prevent it (the host was down,
the CRL lifetime is shorter than a day); renewing whenever the CRL comes within the overlap
of its nextUpdate does.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca import audit, crl_install, ocsp
from ca.audit import Actor
from ca.authority import generate_crl, latest_crl
from ca.crl_scope import COMPLETE
from ca.errors import PkiqError, WrongPassphrase
from ca.keys import Signer
from ca.models import (
    Certificate,
    CertificateAuthority,
    CrlIssuerStatus,
    DistributionPoint,
    ExpresswayNode,
    NodeApi,
    Rollout,
)
from ca.sql import insert_or_ignore

from .models import AlertState, RefreshRun

log = logging.getLogger("pkiq.scheduler")
RETRY_DELIVERY = dt.timedelta(minutes=15)
BEAT = Actor("pkiq beat", "beat")  # who renews pkiq's own CRLs, in the audit log


# ---------------------------------------------------------------- own CRLs

@dataclass(frozen=True)
class OwnCrlOutcome:
    """What renewing one pkiq CA's CRL came to: CRL ``crl_number`` issued because
    ``reason``, or ``error`` (an open problem until a renewal works)."""

    ca: str
    crl_number: int | None = None
    reason: str | None = None
    error: str | None = None

def own_crl_reason(session: Session, ca: CertificateAuthority, now: dt.datetime,
                   overlap: dt.timedelta) -> str | None:
    """Why this CA needs a new CRL now, or None."""
    if ca.not_after <= now:
        return None  # an expired CA signs nothing, CRLs included
    crl = latest_crl(session, ca)
    if crl is None:
        return "it has no CRL yet"
    # A CRL living no longer than the overlap would otherwise be renewed on every tick.
    overlap = min(overlap, (crl.next_update - crl.this_update) / 2)
    if crl.next_update - overlap <= now:
        return f"its CRL {crl.number} reaches nextUpdate at {crl.next_update:%Y-%m-%d %H:%M}Z"
    revoked = select(func.count()).select_from(Certificate).where(
        Certificate.ca_id == ca.id, Certificate.status == "R")
    if not ca.crl_include_expired:
        revoked = revoked.where(Certificate.not_after > now)
    revoked_since = session.scalar(revoked.where(Certificate.revoked_at >= crl.this_update))
    if revoked_since:
        return f"{revoked_since} certificate(s) were revoked after CRL {crl.number}"
    if session.scalar(revoked) != crl.entries:  # a hold was released (or entries expired)
        return f"the revoked certificates no longer match CRL {crl.number}"
    return None


def renew_own_crls(session: Session, signer_for: Callable[[CertificateAuthority], Signer],
                   now: dt.datetime, overlap: dt.timedelta, *, force: bool = False
                   ) -> list[OwnCrlOutcome]:
    """Generate a CRL for each pkiq CA that needs one (every CA when ``force``, as on the
    nightly schedule). Returns what happened per CA; a CA whose key cannot be loaded is
    reported, not fatal. The caller commits."""
    done = []
    for ca in session.scalars(select(CertificateAuthority).order_by(CertificateAuthority.id)):
        if ca.handed_over_at is not None:
            continue  # openssl ca issues its CRLs now (export-openssl --handover)
        reason = own_crl_reason(session, ca, now, overlap)
        needed = reason is not None
        if force and reason is None and ca.not_after > now:
            reason = "the nightly schedule"
        if reason is None:
            continue
        try:
            with session.begin_nested():
                # NO KEY UPDATE, as generate_crl: a second beat waits here (signers do not
                # hold it up)...
                session.refresh(ca, with_for_update={"key_share": True})
                if not force and own_crl_reason(session, ca, now, overlap) is None:
                    continue  # ...and finds the CRL renewed
                crl = generate_crl(session, ca, signer_for(ca), now)
                audit.record(session, BEAT, "crl.issue", f"ca:{ca.name}/crl:{crl.number}",
                             {"entries": crl.entries, "next_update": crl.next_update.isoformat(),
                              "reason": reason}, now)
        except PkiqError as exc:
            log.error("cannot renew the CRL of CA %s: %s", ca.name, exc)
            if needed:  # an open problem until it works; a skipped nightly extra is not
                done.append(OwnCrlOutcome(ca.name, reason=reason, error=str(exc)))
            continue
        done.append(OwnCrlOutcome(ca.name, crl.number, reason))
        log.info("CA %s: CRL %s issued because %s", ca.name, crl.number, reason)
    return done


# ---------------------------------------------------------------- OCSP responders

@dataclass(frozen=True)
class ResponderOutcome:
    """What renewing one CA's OCSP responder certificate came to: serial ``serial`` issued
    because ``reason``, or ``error``."""

    ca: str
    serial: str | None = None
    reason: str | None = None
    error: str | None = None


def renew_responders(session: Session, signer_for: Callable[[CertificateAuthority], Signer],
                     passphrase: bytes | None, now: dt.datetime) -> list[ResponderOutcome]:
    """Issue a responder certificate to every pkiq CA in service whose current one has
    less than half its life left (``ca.ocsp.needs_renewal``), on the same ticks as the
    CRLs. Its key is encrypted under ``passphrase``; without one nothing is issued and each
    CA that needs a responder says so. The caller commits."""
    done = []
    for ca in session.scalars(select(CertificateAuthority).where(
            CertificateAuthority.handed_over_at.is_(None)).order_by(CertificateAuthority.id)):
        if ca.not_after <= now:
            continue
        reason = ocsp.needs_renewal(ocsp.current_responder(session, ca, now), now)
        if reason is None:
            continue
        try:
            if not passphrase:
                raise WrongPassphrase("no CA passphrase to encrypt the responder key under")
            with session.begin_nested():
                session.refresh(ca, with_for_update={"key_share": True})  # one beat at a time
                if ocsp.needs_renewal(ocsp.current_responder(session, ca, now), now) is None:
                    continue
                row = ocsp.issue_responder(session, ca, signer_for(ca), passphrase, now)
                audit.record(session, BEAT, "ocsp.responder.issue",
                             f"ca:{ca.name}/serial:{row.serial}",
                             {"not_after": row.not_after.isoformat(), "reason": reason}, now)
        except PkiqError as exc:
            log.error("cannot renew the OCSP responder of CA %s: %s", ca.name, exc)
            done.append(ResponderOutcome(ca.name, reason=reason, error=str(exc)))
            continue
        done.append(ResponderOutcome(ca.name, row.serial, reason))
        log.info("CA %s: OCSP responder %s issued because %s", ca.name, row.serial, reason)
    return done


# ---------------------------------------------------------------- problems and alerts

@dataclass(frozen=True)
class Problem:
    key: str
    severity: str  # warning | critical (| resolved, when it is sent as gone)
    summary: str
    details: dict


def problems(session: Session, now: dt.datetime, warn: dt.timedelta,
             own_crls: Sequence[OwnCrlOutcome] = (),
             responders: Sequence[ResponderOutcome] = ()) -> list[Problem]:
    """Everything wrong right now: failed distribution points, refused CRLs, CRLs (ours or
    installed from outside) inside the nextUpdate margin or past it."""
    found = []
    failing_issuers = {status.issuer_key for status in session.scalars(
        select(CrlIssuerStatus).where(CrlIssuerStatus.error.is_not(None)))}
    for point in session.scalars(select(DistributionPoint).where(
            DistributionPoint.error.is_not(None))):
        found.extend(_point_problem(point, failing_issuers))
    for status in session.scalars(select(CrlIssuerStatus).where(
            CrlIssuerStatus.error.is_not(None))):
        found.append(Problem(f"issuer:{status.issuer_key}", "critical",
                             f"CRL for {status.issuer} not refreshed: {status.error}; the "
                             "installed CRL is kept",
                             dict(issuer=status.issuer, source=status.source,
                                  error=status.error)))
    last = session.scalar(select(RefreshRun).where(RefreshRun.finished_at.is_not(None))
                          .order_by(RefreshRun.id.desc()).limit(1))
    if last is not None and last.summary and last.summary.get("aborted"):
        found.append(Problem("refresh-failed", "critical",
                             f"the CRL refresh started {last.started_at:%Y-%m-%d %H:%M}Z "
                             f"failed: {last.summary['aborted']}; installed CRLs are kept",
                             dict(run=last.id, error=last.summary["aborted"])))
    for row in crl_install.installed(session):  # every scope of an issuer must be current
        found.extend(_expiry_problem(expiry_key(row), crl_install.scoped_label(
            row.issuer, row.scope), row.next_update, now, warn, scope=row.scope))
    for ca in session.scalars(select(CertificateAuthority).where(
            CertificateAuthority.handed_over_at.is_(None))):
        crl = latest_crl(session, ca)
        if crl is not None and ca.not_after > now:
            found.extend(_expiry_problem(f"own-expiry:{ca.name}", f"pkiq CA {ca.name}",
                                         crl.next_update, now, warn))
    found.extend(node_problems(session))
    for outcome in own_crls:
        if outcome.error is not None:
            found.append(Problem(f"own-renew:{outcome.ca}", "critical",
                                 f"cannot renew the CRL of pkiq CA {outcome.ca}: "
                                 f"{outcome.error}", dict(ca=outcome.ca)))
    for outcome in responders:
        if outcome.error is not None:
            found.append(Problem(f"ocsp-renew:{outcome.ca}", "critical",
                                 f"cannot renew the OCSP responder of pkiq CA {outcome.ca}: "
                                 f"{outcome.error}", dict(ca=outcome.ca)))
    return found


def node_problems(session: Session) -> list[Problem]:
    """Per node: a store that could not be written, and each coverage gap its last
    publication recorded (a CA of its trusted list without a CRL valid for the headroom):
    one alert per node and CA, resolved when the next publication no longer has it."""
    found = []
    for node in session.scalars(select(ExpresswayNode).order_by(ExpresswayNode.fqdn)):
        if node.publish_error:
            found.append(Problem(f"store:{node.fqdn}", "critical",
                                 f"the store of node {node.fqdn} was not published: "
                                 f"{node.publish_error}; its files are as they were",
                                 dict(node=node.fqdn, error=node.publish_error)))
        for gap in node.coverage_gaps or []:
            severity = "warning" if gap["reason"].startswith("expiring") else "critical"
            found.append(Problem(f"coverage:{node.fqdn}:{gap.get('key', gap['sha256'])}",
                                 severity, f"node {node.fqdn} has no good CRL for "
                                 f"{gap['ca']}: {gap['reason']}",
                                 dict(node=node.fqdn, ca=gap["ca"], reason=gap["reason"],
                                      since=gap.get("since"))))
    found.extend(push_problems(session))
    return found


def push_problems(session: Session) -> list[Problem]:
    """REST pushes: a rollout stopped by a failure or paused for a restart (one alert per
    target, resolved when it goes on), and what each node's last drift check found (one
    alert per node, critical when it lacks what it should hold or cannot be read)."""
    found = []
    for rollout in session.scalars(select(Rollout).where(
            Rollout.state.in_(("stopped", "paused"))).order_by(Rollout.id)):
        severity = "critical" if rollout.state == "stopped" else "warning"
        found.append(Problem(f"rollout:{rollout.target}", severity,
                             f"rollout {rollout.id} to {rollout.target} {rollout.error}",
                             dict(rollout=rollout.id, target=rollout.target,
                                  state=rollout.state, error=rollout.error)))
    rows = session.execute(select(ExpresswayNode.fqdn, NodeApi.drift).join(
        NodeApi, NodeApi.node_id == ExpresswayNode.id).order_by(ExpresswayNode.fqdn))
    for fqdn, drift in rows:
        if not drift:
            continue
        severity = "critical" if any(f["severity"] == "critical" for f in drift) \
            else "warning"
        texts = "; ".join(f["text"] for f in drift[:5])
        more = f" (and {len(drift) - 5} more)" if len(drift) > 5 else ""
        found.append(Problem(f"drift:{fqdn}", severity,
                             f"node {fqdn} differs from what pkiq published: {texts}{more}",
                             dict(node=fqdn, findings=drift)))
    return found


def expiry_key(row) -> str:
    """One alert per issuer and scope; the complete scope keeps the key it had before
    scopes, so an open alert is not resolved and raised again by an upgrade."""
    if row.scope == COMPLETE:
        return f"expiry:{row.issuer_key}"
    return f"expiry:{row.issuer_key}:{row.scope_key[:16]}"


def _point_problem(point: DistributionPoint, failing_issuers: set[str]) -> list[Problem]:
    """One alert per problem. A point whose issuers were all refreshed this run by their
    other points is a warning about the point; one whose issuer was not refreshed is told
    by that issuer's alert, which carries every point's reason; a point that never served
    anything is the problem itself."""
    serves = {key for key, _scope in point.serves or []}
    details = dict(url=point.url, error=point.error)
    if not serves:
        return [Problem(f"dp:{point.url}", "critical",
                        f"CRL distribution point {point.url} failed: {point.error}", details)]
    if serves & failing_issuers:
        return []
    return [Problem(f"dp:{point.url}", "warning",
                    f"CRL distribution point {point.url} failed: {point.error}; the CRLs it "
                    "serves were refreshed from their other points", details)]


def crl_expiry(next_update: dt.datetime, now: dt.datetime, warn: dt.timedelta) -> str | None:
    """The one rule for a CRL's freshness, for alerts and for status views alike:
    "expired" once nextUpdate has passed (RFC 5280 5.1.2.5: every certificate it covers
    then counts as revoked on an Expressway), "near" within ``warn`` of it, else None."""
    if next_update <= now:
        return "expired"
    if next_update - warn <= now:
        return "near"
    return None


def _expiry_problem(key, who, next_update, now, warn, *, scope=None) -> list[Problem]:
    state = crl_expiry(next_update, now, warn)
    details = dict(issuer=who, next_update=next_update.isoformat())
    if scope is not None:
        details["scope"] = scope
    if state == "expired":
        return [Problem(key, "critical", f"the CRL for {who} expired at "
                        f"{next_update:%Y-%m-%d %H:%M}Z: every certificate it covers now "
                        "counts as revoked", details)]
    if state == "near":
        hours = (next_update - now).total_seconds() / 3600
        return [Problem(key, "warning", f"the CRL for {who} reaches nextUpdate at "
                        f"{next_update:%Y-%m-%d %H:%M}Z (in {hours:.1f} h) and no newer one "
                        "was installed", details)]
    return []


def plan_alerts(session: Session, found: list[Problem], now: dt.datetime) -> list[Problem]:
    """Decide what to send, and record it as sent, in the caller's (short) transaction: each
    problem once (again only when its severity changes), "resolved" once when it clears, an
    undelivered alert again after 15 minutes, not every tick. Open states are row-locked, so
    a second tick running at the same moment waits here and then finds nothing to send."""
    open_states = {s.key: s for s in session.scalars(
        select(AlertState).order_by(AlertState.key).with_for_update())}
    outgoing = []
    for problem in found:
        state = open_states.pop(problem.key, None)
        if state is None:
            due = insert_or_ignore(session, AlertState, dict(
                key=problem.key, severity=problem.severity, summary=problem.summary,
                first_seen_at=now, last_seen_at=now, notified_at=now))
        else:
            due = state.severity != problem.severity or (
                state.delivery_error is not None and state.notified_at is not None
                and now - state.notified_at >= RETRY_DELIVERY)
            state.severity, state.summary, state.last_seen_at = (
                problem.severity, problem.summary, now)
            if due:
                state.notified_at, state.delivery_error = now, None
        if due:
            outgoing.append(problem)
    for state in open_states.values():  # gone: say so once, then forget it
        if state.notified_at is not None and state.delivery_error is None:
            outgoing.append(Problem(state.key, "resolved", state.summary, {}))
        session.delete(state)
    session.flush()
    return outgoing


def deliver_alerts(outgoing: list[Problem], send: Callable[[Problem, str], list[str]]
                   ) -> dict[str, str | None]:
    """Send, outside any transaction (a dead webhook must not hold the database's write
    lock for its timeout). Returns each key's delivery error, or None."""
    return {alert.key: ("; ".join(errors)[:2000] or None)
            if (errors := send(alert, alert.severity)) else None for alert in outgoing}


def record_deliveries(session: Session, results: dict[str, str | None]) -> None:
    """An undelivered alert keeps its error, so ``plan_alerts`` retries it later."""
    for key, error in results.items():
        state = session.get(AlertState, key)
        if state is not None:
            state.delivery_error = error
