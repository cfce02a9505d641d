"""CRL management (the guide's page): distribution points, the daily update time, the fetch
limits, a refresh now, the status per distribution point and per issuer, and manual CRLs."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from sqlalchemy import select

from ca import authority, crl_config, crl_install
from ca.crl_decode import decode_crls
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
        return [p.url for p in crl_config.add_points(session, urls, ctx.clock())]


def remove_points(ctx: ServiceContext, urls: list[str]) -> list[str]:
    with ctx.transaction() as session:
        return [p.url for p in crl_config.remove_points(session, urls)]


def list_points(ctx: ServiceContext) -> list[dict]:
    with ctx.transaction() as session:
        return [point_view(p) for p in crl_config.list_points(session)]


def replace_points(ctx: ServiceContext, text: str) -> dict:
    """The whole list from text, one URL per line, as the guide's page edits them."""
    urls = crl_config.parse_point_list(text)
    with ctx.transaction() as session:
        added, removed = crl_config.replace_points(session, urls, ctx.clock())
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
        return _settings_view(session, ctx.clock())


# ---------------------------------------------------------------- refresh and status

def refresh_now(ctx: ServiceContext) -> RefreshReport:
    """Every distribution point now; refused (RefreshBusy) while another refresh runs."""
    return refresh(ctx.sessions, ctx.clock, trigger="manual",
                   network=ctx.settings.crl_network())


def _freshness(next_update: dt.datetime, now: dt.datetime, warn: dt.timedelta) -> dict:
    state = crl_expiry(next_update, now, warn)
    return {"expired": state == "expired", "near_next_update": state == "near"}


def _issuer_rows(session, now: dt.datetime, warn: dt.timedelta) -> list[dict]:
    rows = {}
    for crl in crl_install.installed(session):
        rows[crl.issuer_key] = {
            "issuer": crl.issuer, "issuer_key": crl.issuer_key, "origin": crl.origin,
            "source": crl.source, "crl_number": crl.number, "entries": crl.entries,
            "this_update": _iso(crl.this_update), "next_update": _iso(crl.next_update),
            "installed_at": _iso(crl.installed_at),
            **_freshness(crl.next_update, now, warn)}
    for ca in authority.list_cas(session):  # pkiq's own, renewed by beat
        crl = authority.latest_crl(session, ca)
        if crl is None or ca.handed_over_at is not None:  # openssl ca's now
            continue
        rows.setdefault(f"pkiq:{ca.name}", {
            "issuer": ca.subject, "issuer_key": None, "origin": f"pkiq CA {ca.name}",
            "source": None, "crl_number": str(crl.number), "entries": crl.entries,
            "this_update": _iso(crl.this_update), "next_update": _iso(crl.next_update),
            "installed_at": None, **_freshness(crl.next_update, now, warn)})
    for status in session.scalars(select(CrlIssuerStatus)):
        row = rows.setdefault(status.issuer_key, {"issuer": status.issuer,
                                                  "issuer_key": status.issuer_key,
                                                  "crl_number": None})
        row.update(last_attempt=_iso(status.last_attempt_at),
                   last_success=_iso(status.last_success_at), error=status.error)
    return sorted(rows.values(), key=lambda r: r["issuer"])


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
    warnings = [f"the CRL for {i['issuer']} " + ("EXPIRED at " if i.get("expired") else
                                                 "reaches nextUpdate at ") + i["next_update"]
                for i in issuers if i.get("expired") or i.get("near_next_update")]
    return {"settings": settings_view, "last_run": run, "distribution_points": points,
            "issuers": issuers, "warnings": warnings}


# ---------------------------------------------------------------- manual CRLs

def upload(ctx: ServiceContext, data: bytes, *, source: str) -> dict:
    """A CRL (PEM or DER) by hand: it replaces the previous manual CRL of its issuer, and a
    fetched CRL of that issuer overrides it once it is newer."""
    decoded, _notes = decode_crls(data)
    if len(decoded) != 1:
        raise BadInput(f"{source} holds {len(decoded)} CRLs; upload one at a time")
    item = decoded[0]
    with ctx.transaction() as session:
        skew = crl_config.snapshot(session, ctx.clock()).skew
        outcome = crl_install.upload(session, item.crl, item.der, ctx.clock(), skew=skew,
                                     source=source)
        return {"issuer": outcome.issuer, "action": outcome.action,
                "crl_number": outcome.number, "entries": outcome.row.entries,
                "next_update": _iso(outcome.row.next_update)}


def remove(ctx: ServiceContext, issuer: str, *, fetched: bool = False) -> dict:
    """The manual CRL of an issuer, or (``fetched``) the fetched one, so that a CA rebuilt
    with its CRL numbers restarted is taken again on the next refresh."""
    origin = "fetched" if fetched else "manual"
    with ctx.transaction() as session:
        row = crl_install.remove_current(session, issuer, ctx.clock(), origin=origin)
        return {"removed": row.issuer, "origin": origin, "crl_number": row.number}


def crl_in_force(ctx: ServiceContext, issuer: str
                 ) -> tuple[dict, x509.CertificateRevocationList]:
    """The CRL in force for an issuer (by id, issuer key or DN): fetched or manual."""
    with ctx.transaction() as session:
        row = crl_install.effective(session, crl_install.find_current(session, issuer)
                                    .issuer_key)
        info = {"issuer": row.issuer, "origin": row.origin, "crl_number": row.number,
                "entries": row.entries, "next_update": _iso(row.next_update)}
        return info, x509.load_der_x509_crl(row.der)
