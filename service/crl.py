"""CRL management (the guide's page): distribution points, the daily update time, the fetch
limits, a refresh now, the status per distribution point and per issuer, and manual CRLs."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from sqlalchemy import select

from ca import authority, crl_config, crl_install
from ca.crl_decode import decode_crls
from ca.crl_scope import COMPLETE
from ca.errors import BadInput
from ca.models import CrlIssuerStatus
from scheduler.refresh import RefreshReport, refresh
from scheduler.tick import last_run, next_run
from scheduler.upkeep import crl_expiry

from .context import ServiceContext


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


# ---------------------------------------------------------------- distribution points

def point_view(point) -> dict:
    return {"url": point.url, "origin": point.origin,
            "last_attempt": _iso(point.last_attempt_at),
            "last_success": _iso(point.last_success_at), "http_status": point.http_status,
            "bytes": point.bytes_received, "crls": point.crls_found, "error": point.error}


def add_points(ctx: ServiceContext, urls: list[str]) -> list[str]:
    with ctx.transaction() as session:
        added = [p.url for p in crl_config.add_points(session, urls, ctx.clock())]
        ctx.audit_many(session, [("crl.point.add", f"dp:{url}", {}) for url in added])
        return added


def remove_points(ctx: ServiceContext, urls: list[str]) -> list[str]:
    with ctx.transaction() as session:
        removed = [p.url for p in crl_config.remove_points(session, urls)]
        ctx.audit_many(session, [("crl.point.remove", f"dp:{url}", {}) for url in removed])
        return removed


def list_points(ctx: ServiceContext) -> list[dict]:
    with ctx.transaction() as session:
        return [point_view(p) for p in crl_config.list_points(session)]


def replace_points(ctx: ServiceContext, text: str) -> dict:
    """The whole list from text, one URL per line, as the guide's page edits them."""
    urls = crl_config.parse_point_list(text)
    with ctx.transaction() as session:
        added, removed = crl_config.replace_points(session, urls, ctx.clock())
        ctx.audit(session, "crl.point.replace", "dp", {"added": added, "removed": removed})
    return {"added": added, "removed": removed, "count": len(urls)}


# ---------------------------------------------------------------- settings

def _settings_view(session, now: dt.datetime) -> dict:
    s = crl_config.get_settings(session, now)
    return {"enabled": s.enabled, "update_time_utc": s.update_time,
            "spread_minutes": s.spread_seconds // 60, "use_cdp": s.use_cdp,
            "timeout_seconds": s.timeout_seconds, "max_bytes": s.max_bytes,
            "parallelism": s.parallelism, "skew_seconds": s.skew_seconds,
            "warn_hours": s.warn_hours, "overlap_hours": s.overlap_hours,
            "next_run": _iso(next_run(session, now))}


def settings(ctx: ServiceContext) -> dict:
    with ctx.transaction() as session:
        return _settings_view(session, ctx.clock())


def update_settings(ctx: ServiceContext, *, spread_minutes: int | None = None,
                    **changes) -> dict:
    """Change the schedule, limits or margins (``crl_config.DEFAULTS`` names them); every
    value is checked before any is written. Beat sees the change on its next tick."""
    if spread_minutes is not None:
        changes["spread_seconds"] = spread_minutes * 60
    with ctx.transaction() as session:
        crl_config.update_settings(session, ctx.clock(), **changes)
        ctx.audit(session, "crl.settings", "crl-settings",
                  {k: v for k, v in changes.items() if v is not None})
        return _settings_view(session, ctx.clock())


# ---------------------------------------------------------------- refresh and status

def refresh_now(ctx: ServiceContext) -> RefreshReport:
    """Every distribution point now; refused (RefreshBusy) while another refresh runs."""
    return refresh(ctx.sessions, ctx.clock, trigger="manual",
                   network=ctx.settings.crl_network())


def _freshness(next_update: dt.datetime, now: dt.datetime, warn: dt.timedelta) -> dict:
    state = crl_expiry(next_update, now, warn)
    return {"expired": state == "expired", "near_next_update": state == "near"}


def _crl_view(crl) -> dict:
    return {"issuer": crl.issuer, "issuer_key": crl.issuer_key, "scope": crl.scope,
            "origin": crl.origin, "source": crl.source, "crl_number": crl.number,
            "entries": crl.entries, "this_update": _iso(crl.this_update),
            "next_update": _iso(crl.next_update), "installed_at": _iso(crl.installed_at),
            "note": crl.note}


def _issuer_rows(session, now: dt.datetime, warn: dt.timedelta) -> list[dict]:
    """One row per issuer and scope (ca.crl_scope): an issuer whose CRLs are partitioned
    has a row per partition, each judged on its own; the issuer's last attempt and error
    are on each of its rows."""
    rows: dict[tuple, dict] = {}
    for crl in crl_install.installed(session):
        rows[(crl.issuer_key, crl.scope_key)] = {
            **_crl_view(crl), **_freshness(crl.next_update, now, warn)}
    for ca in authority.list_cas(session):  # pkiq's own, renewed by beat
        crl = authority.latest_crl(session, ca)
        if crl is None or ca.handed_over_at is not None:  # openssl ca's now
            continue
        rows.setdefault((f"pkiq:{ca.name}",), {
            "issuer": ca.subject, "issuer_key": None, "scope": COMPLETE,
            "origin": f"pkiq CA {ca.name}", "source": None, "crl_number": str(crl.number),
            "entries": crl.entries, "this_update": _iso(crl.this_update),
            "next_update": _iso(crl.next_update), "installed_at": None, "note": None,
            **_freshness(crl.next_update, now, warn)})
    by_issuer: dict[str, list[dict]] = {}
    for key, row in rows.items():
        by_issuer.setdefault(key[0], []).append(row)
    for status in session.scalars(select(CrlIssuerStatus)):
        found = by_issuer.get(status.issuer_key) or [
            rows.setdefault((status.issuer_key,), {"issuer": status.issuer,
                                                   "issuer_key": status.issuer_key,
                                                   "scope": None, "crl_number": None})]
        for row in found:
            row.update(last_attempt=_iso(status.last_attempt_at),
                       last_success=_iso(status.last_success_at), error=status.error,
                       refreshed_from=None if status.error else status.source)
    return sorted(rows.values(), key=lambda r: (r["issuer"], r["scope"] != COMPLETE,
                                                r["scope"] or ""))


def status(ctx: ServiceContext) -> dict:
    """Settings, the last run, every distribution point and every issuer (installed and
    pkiq's own CRLs), with a warning per CRL near or past its nextUpdate."""
    now = ctx.clock()
    with ctx.transaction() as session:
        settings_view = _settings_view(session, now)
        warn = dt.timedelta(hours=settings_view["warn_hours"])
        points = [point_view(p) for p in crl_config.list_points(session)]
        issuers = _issuer_rows(session, now, warn)
        run = last_run(session)
    warnings = [f"the CRL for {crl_install.scoped_label(i['issuer'], i['scope'])} "
                + ("EXPIRED at " if i.get("expired") else "reaches nextUpdate at ")
                + i["next_update"]
                for i in issuers if i.get("expired") or i.get("near_next_update")]
    return {"settings": settings_view, "last_run": run, "distribution_points": points,
            "issuers": issuers, "warnings": warnings}


# ---------------------------------------------------------------- manual CRLs

def upload(ctx: ServiceContext, data: bytes, *, source: str, force: bool = False) -> dict:
    """A CRL (PEM or DER) by hand: it replaces the previous manual CRL of its issuer and
    scope, and a fetched CRL of that scope overrides it once it is newer. One older than
    the installed CRL of its scope is refused unless ``force`` (recorded on the CRL)."""
    decoded, _notes = decode_crls(data)
    if len(decoded) != 1:
        raise BadInput(f"{source} holds {len(decoded)} CRLs; upload one at a time")
    item = decoded[0]
    with ctx.transaction() as session:
        skew = crl_config.snapshot(session, ctx.clock()).skew
        outcome = crl_install.upload(session, item.crl, item.der, ctx.clock(), skew=skew,
                                     source=source, force=force)
        row = outcome.row
        in_force = crl_install.effective(session, row.issuer_key, row.scope_key)
        ctx.audit(session, "crl.upload", f"issuer:{outcome.issuer}",
                  {"scope": row.scope, "action": outcome.action, "crl_number": outcome.number,
                   "source": source, "force": force, "sha256": row.sha256})
        return {"issuer": outcome.issuer, "scope": row.scope, "action": outcome.action,
                "crl_number": outcome.number, "entries": row.entries,
                "next_update": _iso(row.next_update), "note": row.note,
                "in_force": in_force is not None and in_force.id == row.id}


def remove(ctx: ServiceContext, issuer: str, *, fetched: bool = False,
           scope: str | None = None) -> dict:
    """The manual CRL of an issuer, or (``fetched``) the fetched one, so that a CA rebuilt
    with its CRL numbers restarted is taken again on the next refresh; of its only scope,
    or of ``scope``."""
    origin = "fetched" if fetched else "manual"
    with ctx.transaction() as session:
        row = crl_install.remove_current(session, issuer, ctx.clock(), origin=origin,
                                         scope=scope)
        ctx.audit(session, "crl.remove", f"issuer:{row.issuer}",
                  {"scope": row.scope, "origin": origin, "crl_number": row.number})
        return {"removed": row.issuer, "scope": row.scope, "origin": origin,
                "crl_number": row.number}


def crls_in_force(ctx: ServiceContext, issuer: str, *, scope: str | None = None
                  ) -> list[tuple[dict, x509.CertificateRevocationList]]:
    """The CRL in force for each scope of an issuer (by CRL id, issuer key or DN, compared
    as RFC 5280 7.1 does), complete scope first; or for ``scope`` only."""
    with ctx.transaction() as session:
        return [(_crl_view(row), x509.load_der_x509_crl(crl_install.stored_der(session, row)))
                for row in crl_install.in_force(session, issuer, scope=scope)]


def history(ctx: ServiceContext, issuer: str, *, limit: int = 50) -> list[dict]:
    """The CRLs installed for an issuer, current and replaced, newest first, with any note
    (an upload forced over a newer CRL)."""
    with ctx.transaction() as session:
        return [{**_crl_view(row), "id": row.id, "current": row.current,
                 "replaced_at": _iso(row.replaced_at)}
                for row in crl_install.history_of(session, issuer, limit)]
