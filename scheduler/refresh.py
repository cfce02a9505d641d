"""One CRL refresh: fetch every distribution point, decode, validate and install, record
what happened per distribution point and per issuer. Nothing here can make things worse: a
failed fetch, a bad file or a stale CRL leaves the installed CRL in place with the reason.

Results are applied as they arrive, a group at a time, while the other downloads go on; the
bodies waiting in a group, the downloads in flight and the archives being inflated all draw
on one ``ca.spool.MemoryBudget`` (beyond it they wait in temporary files), so the memory a
refresh takes does not grow with the number of points, the parallelism or what they send.

Runs under the ``crl-refresh`` lease, so a manual refresh, a scheduled one and a second
beat never overlap. Each distribution point commits on its own: a crash half-way keeps what
was already installed, and the database is never left half-written for one CRL.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ca import crl_config, crl_install, trust
from ca.crl_config import CrlNetwork, short_url
from ca.crl_decode import DecodeLimits, decode_crls
from ca.crl_scope import scope_of
from ca.errors import Conflict, PkiqError
from ca.models import (
    CertificateAuthority,
    CrlIssuerStatus,
    DistributionPoint,
    InstalledCrl,
    TrustedCa,
)
from ca.spool import MemoryBudget
from shell.db import transaction

from . import lease
from .fetch import DIRECT, Fetcher, FetchLimits, FetchResult, Validator
from .models import RefreshRun

log = logging.getLogger("pkiq.scheduler")
LEASE = "crl-refresh"
Clock = Callable[[], dt.datetime]


class RefreshBusy(Conflict):
    """Another refresh holds the lease."""


@dataclass(frozen=True)
class Sighting:
    """What one point said, this run, about one issuer it serves (or started to serve)."""

    issuer_key: str
    issuer: str
    refreshed: bool
    reason: str | None = None
    expected: bool = True  # the point is known to serve this issuer


@dataclass
class PointReport:
    url: str
    outcome: str  # installed | unchanged | not_modified | error
    http_status: int | None = None
    bytes_received: int = 0
    crls: list[dict] = field(default_factory=list)  # per CRL: issuer, action, number, error
    error: str | None = None
    problem: str | None = None  # it served another issuer than the one it is known for
    sightings: list[Sighting] = field(default_factory=list)

    @property
    def failed_crls(self) -> list[str]:
        return [c["error"] for c in self.crls if c.get("error")]

    def as_dict(self) -> dict:
        return dict(url=self.url, outcome=self.outcome, http_status=self.http_status,
                    bytes=self.bytes_received, crls=self.crls, error=self.error,
                    problem=self.problem)


@dataclass
class RefreshReport:
    run_id: int
    trigger: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    points: list[PointReport] = field(default_factory=list)

    @property
    def failed(self) -> list[PointReport]:
        return [p for p in self.points if p.outcome == "error" or p.problem or
                any(c.get("error") for c in p.crls)]

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for point in self.points:
            counts[point.outcome] = counts.get(point.outcome, 0) + 1
        return dict(points=len(self.points), failed=len(self.failed), **counts)

    def as_dict(self) -> dict:
        return dict(run=self.run_id, trigger=self.trigger,
                    started_at=self.started_at.isoformat(),
                    finished_at=self.finished_at.isoformat() if self.finished_at else None,
                    summary=self.summary(), points=[p.as_dict() for p in self.points])


def lease_ttl(policy: crl_config.CrlPolicy, points: int = 0) -> dt.timedelta:
    """Long enough for the slowest legal fetch of every point (each URL has one deadline,
    retries included, and ``parallelism`` run at once), so a live refresh never loses its
    lease; a dead one frees it within this time."""
    rounds = -(-points // policy.parallelism) if points else 1
    return dt.timedelta(seconds=max(300, rounds * policy.timeout_seconds + 180))


def limits_from(policy: crl_config.CrlPolicy) -> FetchLimits:
    return FetchLimits(total_timeout=float(policy.timeout_seconds),
                       read_timeout=float(min(policy.timeout_seconds, 30)),
                       connect_timeout=float(min(policy.timeout_seconds, 10)),
                       max_bytes=policy.max_bytes, parallelism=policy.parallelism)


def refresh(sessions: sessionmaker, clock: Clock, *, trigger: str = "manual",
            scheduled_for: dt.datetime | None = None, holder: str | None = None,
            sleep: Callable[[float], None] = time.sleep,
            still_due: Callable[[Session], bool] | None = None,
            policy: crl_config.CrlPolicy | None = None,
            network: CrlNetwork = DIRECT) -> RefreshReport | None:
    """Run one refresh under the lease. ``still_due`` is checked once the lease is held (a
    second beat's tick that waited finds the run done and returns None). ``policy``: the
    settings the caller decided on (a beat tick); by default they are read here, once.
    ``network``: the proxy and internal-network settings (``Settings.crl_network``)."""
    holder = holder or lease.holder_id()
    with transaction(sessions) as session:
        policy = policy or crl_config.snapshot(session, clock())
        ttl = lease_ttl(policy)
        if not lease.acquire(session, LEASE, holder, clock(), ttl):
            held = lease.current_holder(session, LEASE, clock())
            by = f" by {held.holder} (lease until {held.expires_at:%H:%M:%S}Z)" if held else ""
            raise RefreshBusy(f"a CRL refresh is already running{by}; try again later")
    try:
        with transaction(sessions) as session:
            if still_due is not None and not still_due(session):
                return None
            run = RefreshRun(trigger=trigger, scheduled_for=scheduled_for,
                             started_at=clock(), holder=holder)
            session.add(run)
            session.flush()
            report = RefreshReport(run.id, trigger, run.started_at)
        try:  # from here on, whatever stops the run is recorded on it
            with transaction(sessions) as session:
                crl_config.sync_cdp_points(
                    session, trust.cdp_sources(session) if policy.use_cdp else {}, clock())
                points = [(p.url, Validator(p.etag, p.last_modified))
                          for p in crl_config.list_points(session)]
                trust_pem = _https_anchors(session)
                ttl = lease_ttl(policy, len(points))
                _keep_lease(session, holder, clock(), ttl)
            return _fetch_and_apply(sessions, clock, report, points, trust_pem, policy,
                                    holder, ttl, sleep, network)
        except Exception as exc:
            _record_failure(sessions, report.run_id, clock(), exc)
            raise
    finally:
        with transaction(sessions) as session:
            lease.release(session, LEASE, holder)


def _fetch_and_apply(sessions, clock, report, points, trust_pem, policy, holder, ttl,
                     sleep, network) -> RefreshReport:
    limits = limits_from(policy)
    budget = MemoryBudget(limits.memory_bytes)
    # An archive inflates to at most what a plain download may be.
    decode_limits = DecodeLimits(max_total_bytes=policy.max_bytes)
    with Fetcher(points, limits=limits, extra_trust_pem=trust_pem or None, sleep=sleep,
                 network=network, budget=budget) as fetcher:
        for chunk in _chunks(fetcher):
            try:
                report.points.extend(_apply_chunk(
                    sessions, chunk, clock(), policy.skew, decode_limits, budget,
                    renew=lambda s: _keep_lease(s, holder, clock(), ttl)))
            finally:
                for result in chunk:
                    result.close()
    order = {url: number for number, (url, _validator) in enumerate(points)}
    report.points.sort(key=lambda p: order.get(p.url, len(order)))  # as configured
    with transaction(sessions) as session:
        report.finished_at = clock()
        judge_issuers(session, report, report.finished_at)
        run = session.get(RefreshRun, report.run_id)
        run.finished_at, run.summary = report.finished_at, report.summary()
    return report


def _record_failure(sessions: sessionmaker, run_id: int, now: dt.datetime,
                    exc: BaseException) -> None:
    """Say on the run why it stopped (``upkeep.problems`` turns that into an alert until a
    later run succeeds); never hide the original error behind a second one."""
    try:
        with transaction(sessions) as session:
            run = session.get(RefreshRun, run_id)
            run.finished_at = now
            run.summary = {"aborted": f"{type(exc).__name__}: {exc}"[:500]}
    except Exception:  # noqa: BLE001 - the database may be what failed
        log.exception("cannot record the failed CRL refresh %s", run_id)


class LeaseLost(RefreshBusy):
    """The lease expired under a live refresh (a far too slow fetch) and another took it."""


def _keep_lease(session: Session, holder: str, now: dt.datetime, ttl: dt.timedelta) -> None:
    if not lease.renew(session, LEASE, holder, now, ttl):
        raise LeaseLost("the CRL refresh lost its lease to another refresh; stopping this one "
                        "before it installs anything more")


def _https_anchors(session: Session) -> bytes:
    """The trusted CA list plus pkiq's own CAs (always trusted, listed or not): an HTTPS
    distribution point may present a certificate from either."""
    own = b"".join(x509.load_der_x509_certificate(der).public_bytes(
        serialization.Encoding.PEM) for der in session.scalars(
        select(CertificateAuthority.cert_der)))
    return trust.trusted_pem(session) + own


CHUNK_POINTS = 200  # distribution points per transaction...
CHUNK_BYTES = 16 * 2**20  # ...or fewer when their bodies are large...
CHUNK_WAIT = 0.5  # ...or those that arrived within this many seconds of the group's first


def _chunks(fetcher: Fetcher):
    """Results, as they arrive, in groups written in one transaction each: a commit per
    point made 1,000 unchanged points cost seconds; a group keeps what is done safe if the
    run dies, and a slow point never holds back what arrived before it for long."""
    chunk: list[FetchResult] = []
    size, since = 0, 0.0
    while True:
        wait = max(0.0, since + CHUNK_WAIT - time.monotonic()) if chunk else None
        try:
            item = fetcher.next(wait)
        except queue.Empty:
            yield chunk
            chunk, size = [], 0
            continue
        if item is None:
            break
        if not chunk:
            since = time.monotonic()
        chunk.append(item[1])
        size += item[1].bytes_received
        if len(chunk) >= CHUNK_POINTS or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _apply_chunk(sessions: sessionmaker, chunk: list[FetchResult], now: dt.datetime,
                 skew: dt.timedelta, decode_limits: DecodeLimits, budget: MemoryBudget,
                 renew) -> list[PointReport]:
    """A group of points in one transaction (each CRL still in its own savepoint). Should a
    bug surface on one point's content, the group is rolled back and done again one point
    per transaction, so only that point is marked failed."""
    try:
        with transaction(sessions) as session:
            points = {p.url: p for p in session.scalars(select(DistributionPoint).where(
                DistributionPoint.url.in_([r.url for r in chunk])))}
            keys = {key for p in points.values() for key in p.issuers or []}
            # Held here, so session.get() finds them in the (weak) identity map; no
            # autoflush, so a group is one batch of UPDATEs at commit, not two per point.
            statuses = list(session.scalars(select(CrlIssuerStatus).where(
                CrlIssuerStatus.issuer_key.in_(keys))))
            with session.no_autoflush:
                reports = [_apply(session, r, points.get(r.url), now, skew, decode_limits,
                                  budget) for r in chunk]
            del statuses
            renew(session)
            return reports
    except (SQLAlchemyError, PkiqError):
        raise
    except Exception:  # noqa: BLE001 - find the point that trips it, spare the others
        return [_apply_safely(sessions, result, now, skew, decode_limits, budget)
                for result in chunk]


def _apply_safely(sessions: sessionmaker, result: FetchResult, now: dt.datetime,
                  skew: dt.timedelta, decode_limits: DecodeLimits,
                  budget: MemoryBudget) -> PointReport:
    """One distribution point in its own transaction. A bug met on one point's content is
    logged with its traceback and recorded on that point; the others still run."""
    try:
        with transaction(sessions) as session:
            point = session.scalar(select(DistributionPoint).where(
                DistributionPoint.url == result.url))
            return _apply(session, result, point, now, skew, decode_limits, budget)
    except (SQLAlchemyError, PkiqError):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug must not end the nightly run
        log.exception("CRL refresh: internal error on %s", result.final_url,
                      extra={"distribution_point": short_url(result.url)})
        error = f"internal error ({type(exc).__name__}) on this distribution point; see the log"
        with transaction(sessions) as session:
            point = session.scalar(select(DistributionPoint).where(
                DistributionPoint.url == result.url))
            if point is not None:
                point.last_attempt_at, point.error = now, error
        return PointReport(result.url, "error", result.http_status, result.bytes_received,
                           error=error)


def _apply(session: Session, result: FetchResult, point: DistributionPoint | None,
           now: dt.datetime, skew: dt.timedelta, decode_limits: DecodeLimits,
           budget: MemoryBudget) -> PointReport:
    """Install what one distribution point served; record its status either way."""
    report = PointReport(result.url, result.outcome, result.http_status, result.bytes_received)
    decoded = None
    if result.outcome == "error":
        report.error = result.error
    elif result.outcome == "fetched":
        body = result.content.source() if result.content is not None else result.body
        try:
            decoded, _notes = decode_crls(body, decode_limits, budget=budget)
        except PkiqError as exc:
            report.outcome, report.error = "error", f"{exc} (from {short_url(result.url)})"
        else:
            _install_all(session, decoded, result.url, now, skew, report)
    if point is None:  # removed while we fetched
        return report
    point.last_attempt_at, point.http_status = now, result.http_status
    point.bytes_received = result.bytes_received
    serves = [tuple(pair) for pair in point.serves or []]
    if decoded is not None:
        changed = report.problem = _judge_point(session, report, point, serves)
        problems = [*report.failed_crls, *([changed] if changed else [])]
        point.error = "; ".join(problems) if problems else None
        point.crls_found = len(report.crls)
        if report.outcome != "error":
            point.last_success_at = now
            keys = [c["issuer_key"] for c in report.crls if c.get("issuer_key")]
            point.issuers = list(dict.fromkeys(keys))
        # Remember the validators only when every CRL was taken: a refused one must be
        # fetched (not answered 304) again next time, e.g. once its CA is trusted.
        accepted = not problems
        point.etag = _fits(result.validator.etag, 512) if accepted else None
        point.last_modified = _fits(result.validator.last_modified, 64) if accepted else None
    elif report.outcome == "error":
        point.error = report.error
        report.sightings = [Sighting(key, _issuer_label(session, key), False, report.error)
                            for key in dict.fromkeys(key for key, _ in serves)]
    else:  # 304: what we hold is still what it serves; an earlier problem on it stands
        point.last_success_at = now
        report.sightings = [Sighting(key, _issuer_label(session, key), point.error is None,
                                     point.error)
                            for key in dict.fromkeys(key for key, _ in serves)]
    return report


def _judge_point(session: Session, report: PointReport, point: DistributionPoint,
                 serves: list[tuple]) -> str | None:
    """Compare what the point served with what it is known to serve, record a sighting per
    issuer, and learn what it serves at its first success. Returns the point's problem when
    it served another issuer (or scope) instead of one it used to: that CRL is still
    installed if valid (it is its own issuer's truth), but it does not count as a refresh of
    its issuer, and the issuer the point used to serve counts as not refreshed by it."""
    served = [(c["issuer_key"], c.get("scope_key"), c) for c in report.crls
              if c.get("issuer_key")]
    taken = [(key, scope) for key, scope, c in served
             if not c.get("error") or c.get("stale")]
    if not serves:  # first success: learn what it serves
        if taken:
            point.serves = [list(pair) for pair in dict.fromkeys(taken)]
        serves = taken

    def expected(key: str, scope: str | None) -> bool:
        return any(k == key and s in (None, scope) for k, s in serves)

    missing = [(key, scope) for key, scope in serves
               if not any(k == key and scope in (None, s) for k, s, _ in served)]
    strays = [(key, scope, c) for key, scope, c in served if not expected(key, scope)]
    for key, scope, crl in served:
        ok = not crl.get("error") or crl.get("stale", False)  # a lagging copy: the issuer's
        report.sightings.append(Sighting(key, crl["issuer"], ok, crl.get("error"),
                                         expected(key, scope)))
    if not missing:
        # an issuer known with any scope (from a CDP, or an older pkiq) learns its scopes;
        # issuers it serves besides (a bundle that grew) are installed but not learned: they
        # never become this point's to vouch for without the operator re-adding it
        refined = [pair for key, scope in serves for pair in (
            [(key, scope)] if scope is not None else
            [(k, s) for k, s in taken if k == key] or [(key, None)])]
        if refined != serves:
            point.serves = [list(pair) for pair in dict.fromkeys(refined)]
        return None
    others = ", ".join(dict.fromkeys(c["issuer"] for _, _, c in strays)) or "nothing usable"
    for key, scope in missing:
        label = _issuer_label(session, key)
        what = label if scope is None else f"{label} ({_scope_text(session, key, scope)})"
        reason = (f"{short_url(point.url)} no longer serves the CRL of {what}; it served "
                  f"{others} instead")
        report.sightings.append(Sighting(key, label, False, reason))
    labels = ", ".join(dict.fromkeys(_issuer_label(session, key) for key, _ in missing))
    return (f"serves {others} instead of {labels}, which it served before; that issuer "
            "is not refreshed from here (remove and add the point again if the change is "
            "intended)")


def judge_issuers(session: Session, report: RefreshReport, now: dt.datetime) -> None:
    """Each issuer's status after a run, over all of its points: refreshed when at least one
    point it is known to be served by refreshed it; otherwise not refreshed, with every
    point's reason. A point that served an issuer it is not known to serve counts only
    where no known point spoke of that issuer."""
    seen: dict[str, list[tuple[str, Sighting]]] = {}
    for point in report.points:
        for sighting in point.sightings:
            seen.setdefault(sighting.issuer_key, []).append((point.url, sighting))
    for key, said in seen.items():
        own = [(url, s) for url, s in said if s.expected] or said
        refreshed = [url for url, s in own if s.refreshed]
        label = said[0][1].issuer
        if refreshed:
            crl_install.record_attempt(session, key, label, now, error=None,
                                       source=refreshed[0])
            continue
        reasons = list(dict.fromkeys(f"{short_url(url)}: {s.reason}" for url, s in own))
        crl_install.record_attempt(session, key, label, now, error="; ".join(reasons),
                                   source=own[0][0])


def _scope_text(session: Session, issuer_key: str, scope_key: str) -> str:
    text = session.scalar(select(InstalledCrl.scope).where(
        InstalledCrl.issuer_key == issuer_key, InstalledCrl.scope_key == scope_key).limit(1))
    return text or "a partition"


def _install_all(session, decoded, url, now, skew, report: PointReport) -> None:
    actions = set()
    for item in decoded:
        issuer_key = trust.name_key(item.crl.issuer)
        label = crl_install.issuer_label(item.crl)
        entry = dict(issuer=label, issuer_key=issuer_key, source=item.source,
                     scope_key=_scope_key(item.crl))
        try:
            with session.begin_nested():
                checked = crl_install.check(session, item.crl, item.der, now, skew=skew)
                outcome = crl_install.install(session, checked, origin="fetched", source=url,
                                              now=now)
        except PkiqError as exc:
            entry.update(action="refused", error=str(exc),
                         stale=isinstance(exc, crl_install.OlderThanInstalled))
        else:
            entry.update(action=outcome.action, number=outcome.number,
                         entries=checked.entries, scope=checked.scope.text)
        actions.add(entry["action"])
        report.crls.append(entry)
    if actions == {"refused"}:
        report.outcome = "error"
        report.error = "; ".join(c["error"] for c in report.crls)
    else:
        report.outcome = "installed" if "installed" in actions else "unchanged"


def _scope_key(crl: x509.CertificateRevocationList) -> str | None:
    """The CRL's scope key, or None when its IDP cannot be read (the CRL is refused then)."""
    try:
        return scope_of(crl).key
    except (PkiqError, ValueError):
        return None


def _fits(value: str | None, size: int) -> str | None:
    """A validator header longer than its column (or not printable ASCII) is not kept: the
    next fetch is then a plain GET, never a failed commit."""
    if value is None or len(value) > size or not (value.isascii() and value.isprintable()):
        return None
    return value


def _issuer_label(session: Session, issuer_key: str) -> str:
    status = session.get(CrlIssuerStatus, issuer_key)
    if status is not None:
        return status.issuer
    trusted = session.scalar(select(TrustedCa.subject).where(
        TrustedCa.subject_key == issuer_key).limit(1))
    return trusted or issuer_key
