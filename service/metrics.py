"""What ``/metrics`` reports from the database, read at scrape time: one query per family,
none of them reading a CRL's or a certificate's bytes, each bounded by the number of CAs,
issuers, distribution points, nodes or job states (never by the number of jobs or
certificates: the jobs are counted by the database).

``snapshot`` never raises for the database: a family whose query fails is left out and
named in ``errors``; once the database cannot be reached at all the rest are not tried (each
would wait for its own connection to fail), and ``up`` is False."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from ca import jobs
from ca.crl_config import safe_url
from ca.models import (
    CertificateAuthority,
    Crl,
    CrlIssuerStatus,
    DistributionPoint,
    ExpresswayNode,
    InstalledCrl,
    NodeApi,
    Rollout,
    SigningJob,
)

from .context import ServiceContext

OPEN_ROLLOUTS = ("running", "waiting", "paused", "stopped")
FAMILIES = ("jobs", "own_crls", "installed_crls", "distribution_points", "crl_issuers",
            "nodes", "node_apis", "rollouts")


@dataclass
class Snapshot:
    now: dt.datetime
    up: bool = True
    errors: dict[str, str] = field(default_factory=dict)  # family: one line
    jobs: dict[str, int] = field(default_factory=dict)  # state: count
    oldest_queued: dt.datetime | None = None
    crls: list[dict] = field(default_factory=list)  # issuer, scope, origin, ca, this/next
    points: list[dict] = field(default_factory=list)
    issuers: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)
    node_apis: list[dict] = field(default_factory=list)
    rollouts: dict[str, int] = field(default_factory=dict)


def _jobs(session, snap: Snapshot) -> None:
    rows = session.execute(select(SigningJob.state, func.count(),
                                  func.min(SigningJob.submitted_at))
                           .group_by(SigningJob.state)).all()
    snap.jobs = dict.fromkeys(jobs.STATES, 0)
    for state, count, oldest in rows:
        snap.jobs[state] = count
        if state == "queued":
            snap.oldest_queued = oldest


def _own_crls(session, snap: Snapshot) -> None:
    """pkiq's own CRLs: the newest of each CA (its number is the highest)."""
    newest = (select(Crl.ca_id, func.max(Crl.number).label("number"))
              .group_by(Crl.ca_id).subquery())
    rows = session.execute(
        select(CertificateAuthority.name, CertificateAuthority.subject, Crl.this_update,
               Crl.next_update)
        .join(newest, newest.c.ca_id == CertificateAuthority.id)
        .join(Crl, (Crl.ca_id == newest.c.ca_id) & (Crl.number == newest.c.number))).all()
    snap.crls += [{"issuer": subject, "scope": "complete", "origin": "pkiq", "ca": name,
                   "this_update": this, "next_update": next_} for name, subject, this, next_
                  in rows]


def _installed_crls(session, snap: Snapshot) -> None:
    rows = session.execute(select(InstalledCrl.issuer, InstalledCrl.scope, InstalledCrl.origin,
                                  InstalledCrl.this_update, InstalledCrl.next_update)
                           .where(InstalledCrl.current)).all()
    snap.crls += [{"issuer": issuer, "scope": scope, "origin": origin, "ca": "",
                   "this_update": this, "next_update": next_}
                  for issuer, scope, origin, this, next_ in rows]


def _points(session, snap: Snapshot) -> None:
    rows = session.execute(select(DistributionPoint.url, DistributionPoint.error,
                                  DistributionPoint.last_attempt_at,
                                  DistributionPoint.last_success_at)).all()
    snap.points = [{"url": safe_url(url), "failing": error is not None and attempt is not None,
                    "last_success": success} for url, error, attempt, success in rows]


def _issuers(session, snap: Snapshot) -> None:
    rows = session.execute(select(CrlIssuerStatus.issuer, CrlIssuerStatus.error,
                                  CrlIssuerStatus.last_success_at)).all()
    snap.issuers = [{"issuer": issuer, "failing": error is not None, "last_success": success}
                    for issuer, error, success in rows]


def _nodes(session, snap: Snapshot) -> None:
    rows = session.execute(select(ExpresswayNode.fqdn, ExpresswayNode.publish_error,
                                  ExpresswayNode.publish_attempts,
                                  ExpresswayNode.published_at,
                                  ExpresswayNode.coverage_gaps)).all()
    snap.nodes = [{"node": fqdn, "failing": error is not None, "attempts": attempts or 0,
                   "published_at": published, "gaps": len(gaps or [])}
                  for fqdn, error, attempts, published, gaps in rows]


def _node_apis(session, snap: Snapshot) -> None:
    rows = session.execute(select(ExpresswayNode.fqdn, NodeApi.drift, NodeApi.drift_checked_at,
                                  NodeApi.auth_refused_at)
                           .join(ExpresswayNode, ExpresswayNode.id == NodeApi.node_id)).all()
    found = []
    for fqdn, drift, checked, refused in rows:
        severities = {"critical": 0, "warning": 0}
        for finding in drift or []:
            severity = finding.get("severity") if isinstance(finding, dict) else None
            severities[severity if severity in severities else "warning"] += 1
        found.append({"node": fqdn, "drift": severities, "checked_at": checked,
                      "auth_refused": refused is not None})
    snap.node_apis = found


def _rollouts(session, snap: Snapshot) -> None:
    rows = session.execute(select(Rollout.state, func.count())
                           .where(Rollout.state.in_(OPEN_ROLLOUTS))
                           .group_by(Rollout.state)).all()
    snap.rollouts = dict.fromkeys(OPEN_ROLLOUTS, 0) | dict(rows)


READERS = {"jobs": _jobs, "own_crls": _own_crls, "installed_crls": _installed_crls,
           "distribution_points": _points, "crl_issuers": _issuers, "nodes": _nodes,
           "node_apis": _node_apis, "rollouts": _rollouts}


def _line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0][:200] if text else ''}"


def snapshot(ctx: ServiceContext) -> Snapshot:
    snap = Snapshot(ctx.clock())
    try:
        sessions = ctx.sessions
    except Exception as exc:  # noqa: BLE001 - the scrape says so rather than failing
        snap.up = False
        snap.errors = dict.fromkeys(FAMILIES, _line(exc))
        return snap
    for family in FAMILIES:
        try:
            with sessions() as session, session.begin():
                READERS[family](session, snap)
        except (OperationalError, DBAPIError) as exc:
            snap.errors[family] = _line(exc)
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                snap.up = False  # the database is away: the rest would only wait for it
                for rest in FAMILIES[FAMILIES.index(family) + 1:]:
                    snap.errors.setdefault(rest, "not tried: the database did not answer")
                break
        except Exception as exc:  # noqa: BLE001 - one family must not cost the others
            snap.errors[family] = _line(exc)
    return snap
