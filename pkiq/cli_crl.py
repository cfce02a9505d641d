"""``pkiq trust ...`` (the trusted CA list) and ``pkiq crl ...`` (CRL management: the
distribution points, the daily update time, refresh, status, manual CRLs): the guide's
"CRL management" and "Managing the trusted CA list" pages as commands."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca import authority, crl_config, crl_install, trust
from ca.crl_decode import decode_crls
from ca.errors import BadInput
from ca.models import CrlIssuerStatus
from ca.x509text import decode_all, render

from .cli import App, _deliver, _emit, _read_input, _warn, cli, json_option
from .files import Output

PARTIAL = 9  # exit code: the refresh failed for some distribution point or issuer


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


# ====================================================================== trust

@cli.group("trust")
def trust_group():
    """The trusted CA list: the anchors CRLs are checked against (and later published)."""


def _trust_info(row) -> dict:
    return {"id": row.id, "sha256": row.sha256, "subject": row.subject, "issuer": row.issuer,
            "not_after": _iso(row.not_after), "origin": row.origin}


def _trust_line(row) -> str:
    return (f"{row.id:>4}  {row.sha256[:16]}  {row.not_after:%Y-%m-%d}  {row.origin:<8}  "
            f"{row.subject}")


@trust_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_obj
def trust_add(app: App, file, as_json):
    """Append the CA certificates of a PEM bundle (duplicates are ignored)."""
    data = _read_input(file)
    with app.transaction() as session:
        result = trust.add(session, data, app.clock())
        info = {"added": [_trust_info(r) for r in result.added],
                "duplicates": result.duplicates, "warnings": result.warnings}
    _warn(result.warnings)
    _emit(info, as_json, lambda: "\n".join(
        [f"added {len(result.added)} CA certificate(s), {len(result.duplicates)} "
         "already in the list"] + [_trust_line(r) for r in result.added]))


@trust_group.command("list")
@json_option
@click.pass_obj
def trust_list(app: App, as_json):
    """One line per trusted CA: id, fingerprint, notAfter, origin, subject."""
    with app.transaction() as session:
        rows = trust.list_entries(session)
        warnings = trust.list_warnings(session, app.clock())
        info = {"entries": [_trust_info(r) for r in rows], "warnings": warnings}
        lines = [_trust_line(r) for r in rows] or ["the trusted CA list is empty"]
    _warn(warnings)
    _emit(info, as_json, "\n".join(lines))


@trust_group.command("show")
@click.argument("ref", required=False)
@click.option("--pem", is_flag=True, help="The PEM file itself, not the decoded form.")
@json_option
@click.pass_obj
def trust_show(app: App, ref, pem, as_json):
    """Show one trusted CA (by id or fingerprint), or all, decoded or as PEM."""
    with app.transaction() as session:
        rows = [trust.find(session, ref)] if ref else trust.list_entries(session)
        ders = [(r.der, _trust_info(r)) for r in rows]
    certs = [(x509.load_der_x509_certificate(der), info) for der, info in ders]
    if pem or as_json:
        pems = [c.public_bytes(serialization.Encoding.PEM).decode() for c, _ in certs]
        _emit([{**info, "pem": p} for (_, info), p in zip(certs, pems, strict=True)], as_json,
              "".join(pems).rstrip("\n"))
        return
    decoded = [item for c, _ in certs
               for item in decode_all(c.public_bytes(serialization.Encoding.DER))]
    click.echo("\n\n".join(render(item) for item in decoded) or "the list is empty")


@trust_group.command("remove")
@click.argument("refs", nargs=-1, required=True)
@json_option
@click.pass_obj
def trust_remove(app: App, refs, as_json):
    """Delete entries by id or fingerprint (nothing is deleted if one is not found)."""
    with app.transaction() as session:
        rows, warnings = trust.remove(session, list(refs), app.clock())
        info = {"removed": [_trust_info(r) for r in rows], "warnings": warnings}
    _warn(warnings)
    _emit(info, as_json, "\n".join(f"removed {r['subject']}" for r in info["removed"]))


@trust_group.command("reset")
@json_option
@click.pass_obj
def trust_reset(app: App, as_json):
    """Reset the list to the default: pkiq's own CAs only."""
    with app.transaction() as session:
        rows = trust.reset(session, app.clock())
        info = {"entries": [_trust_info(r) for r in rows]}
    _emit(info, as_json, f"the trusted CA list now holds pkiq's {len(rows)} CA(s)")


# ====================================================================== crl

@cli.group("crl")
def crl_group():
    """CRLs from outside: distribution points, the nightly refresh, status, uploads."""


@crl_group.group("dp")
def dp_group():
    """The HTTP(S) distribution points the nightly refresh fetches."""


def _dp_info(point) -> dict:
    return {"url": point.url, "origin": point.origin,
            "last_attempt": _iso(point.last_attempt_at),
            "last_success": _iso(point.last_success_at), "http_status": point.http_status,
            "bytes": point.bytes_received, "crls": point.crls_found, "error": point.error}


@dp_group.command("add")
@click.argument("urls", nargs=-1, required=True)
@json_option
@click.pass_obj
def dp_add(app: App, urls, as_json):
    """Add distribution point URLs (http:// or https:// only)."""
    with app.transaction() as session:
        added = [p.url for p in crl_config.add_points(session, list(urls), app.clock())]
    _emit({"added": added}, as_json, f"added {len(added)} distribution point(s)")


@dp_group.command("remove")
@click.argument("urls", nargs=-1, required=True)
@json_option
@click.pass_obj
def dp_remove(app: App, urls, as_json):
    """Remove distribution points (installed CRLs stay until replaced)."""
    with app.transaction() as session:
        removed = [p.url for p in crl_config.remove_points(session, list(urls))]
    _emit({"removed": removed}, as_json, f"removed {len(removed)} distribution point(s)")


@dp_group.command("list")
@json_option
@click.pass_obj
def dp_list(app: App, as_json):
    """The configured URLs, one per line (the form 'crl dp set' reads back)."""
    with app.transaction() as session:
        points = [_dp_info(p) for p in crl_config.list_points(session)]
    _emit(points, as_json, "\n".join(p["url"] + ("  # from a trusted CA's CDP"
                                                 if p["origin"] == "cdp" else "")
                                     for p in points))


@dp_group.command("set")
@click.argument("file", type=click.File("r"))
@json_option
@click.pass_obj
def dp_set(app: App, file, as_json):
    """Replace the list with the URLs of FILE ('-' for stdin), one per line."""
    text = file.read(1 << 20)
    urls = crl_config.parse_point_list(text)
    with app.transaction() as session:
        added, removed = crl_config.replace_points(session, urls, app.clock())
    _emit({"added": added, "removed": removed, "count": len(urls)}, as_json,
          f"{len(urls)} distribution point(s): {len(added)} added, {len(removed)} removed")


def _settings_info(session, app: App) -> dict:
    from scheduler.service import next_run

    s = crl_config.get_settings(session, app.clock())
    return {"enabled": s.enabled, "update_time_utc": s.update_time,
            "spread_minutes": s.spread_seconds // 60, "use_cdp": s.use_cdp,
            "timeout_seconds": s.timeout_seconds, "max_bytes": s.max_bytes,
            "parallelism": s.parallelism, "skew_seconds": s.skew_seconds,
            "warn_hours": s.warn_hours, "overlap_hours": s.overlap_hours,
            "next_run": _iso(next_run(session, app.clock()))}


def _settings_text(info: dict) -> str:
    state = "enabled" if info["enabled"] else "disabled"
    lines = [f"automatic CRL updates: {state}, daily at {info['update_time_utc']} UTC"
             + (f" (+ up to {info['spread_minutes']} min spread)"
                if info["spread_minutes"] else ""),
             f"next run: {info['next_run'] or '-'}",
             f"fetch: timeout {info['timeout_seconds']} s, at most {info['max_bytes']} bytes, "
             f"{info['parallelism']} in parallel; CDPs of trusted CAs: "
             f"{'yes' if info['use_cdp'] else 'no'}",
             f"thisUpdate skew {info['skew_seconds']} s; alert {info['warn_hours']} h before "
             f"nextUpdate; pkiq CRLs renewed {info['overlap_hours']} h before nextUpdate"]
    return "\n".join(lines)


@crl_group.command("schedule")
@click.option("--at", "at", metavar="HH:MM", help="Daily update time, UTC.")
@click.option("--enable/--disable", "enabled", default=None,
              help="Turn automatic CRL updates on or off.")
@click.option("--spread", type=click.IntRange(0, 360), metavar="MINUTES",
              help="Delay this installation by a fixed random part of this window.")
@json_option
@click.pass_obj
def crl_schedule(app: App, at, enabled, spread, as_json):
    """Show or change when the nightly refresh runs (beat picks it up on its next tick)."""
    with app.transaction() as session:
        crl_config.update_settings(session, app.clock(), update_time=at, enabled=enabled,
                                   spread_seconds=None if spread is None else spread * 60)
        info = _settings_info(session, app)
    _emit(info, as_json, lambda: _settings_text(info))


@crl_group.command("settings")
@click.option("--timeout", type=int, metavar="SECONDS", help="Per fetch, whole download.")
@click.option("--max-size", type=int, metavar="BYTES", help="Largest CRL file accepted.")
@click.option("--parallel", type=int, metavar="N", help="Fetches at once.")
@click.option("--use-cdp/--no-use-cdp", default=None,
              help="Also fetch the CDP URLs named in the trusted CA certificates.")
@click.option("--skew", type=int, metavar="SECONDS", help="Allowed thisUpdate in the future.")
@click.option("--warn-hours", type=int, help="Alert this close to an installed nextUpdate.")
@click.option("--overlap-hours", type=int,
              help="Renew pkiq's own CRLs this close to their nextUpdate.")
@json_option
@click.pass_obj
def crl_settings(app: App, timeout, max_size, parallel, use_cdp, skew, warn_hours,
                 overlap_hours, as_json):
    """Show or change the fetch limits and margins."""
    with app.transaction() as session:
        crl_config.update_settings(session, app.clock(), timeout_seconds=timeout,
                                   max_bytes=max_size, parallelism=parallel, use_cdp=use_cdp,
                                   skew_seconds=skew, warn_hours=warn_hours,
                                   overlap_hours=overlap_hours)
        info = _settings_info(session, app)
    _emit(info, as_json, lambda: _settings_text(info))


@crl_group.command("refresh")
@json_option
@click.pass_obj
def crl_refresh(app: App, as_json):
    """Fetch every distribution point now (refused while another refresh runs)."""
    from scheduler.refresh import refresh

    report = refresh(app.sessions, app.clock, trigger="manual")
    info = report.as_dict()

    def text() -> str:
        lines = []
        for point in report.points:
            line = f"{point.outcome:<12} {point.url}"
            for crl in point.crls:
                number = crl.get("number")
                line += (f"\n             {crl['action']}: {crl['issuer']}"
                         + (f" CRL {number}" if number is not None else "")
                         + (f" ({crl['entries']} entries)" if "entries" in crl else "")
                         + (f": {crl['error']}" if crl.get("error") else ""))
            if point.error and not point.crls:
                line += f"\n             {point.error}"
            lines.append(line)
        summary = report.summary()
        lines.append(f"{summary['points']} distribution point(s), {summary['failed']} "
                     "failed; installed CRLs are kept where a fetch failed")
        return "\n".join(lines)

    _emit(info, as_json, text)
    if report.failed:
        sys.exit(PARTIAL)


def _issuer_rows(session, now: dt.datetime, warn: dt.timedelta) -> list[dict]:
    rows = {}
    for crl in crl_install.installed(session):
        rows[crl.issuer_key] = {
            "issuer": crl.issuer, "issuer_key": crl.issuer_key, "origin": crl.origin,
            "source": crl.source, "crl_number": crl.number, "entries": crl.entries,
            "this_update": _iso(crl.this_update), "next_update": _iso(crl.next_update),
            "installed_at": _iso(crl.installed_at),
            "expired": crl.next_update <= now,
            "near_next_update": now < crl.next_update <= now + warn}
    for ca in authority.list_cas(session):  # pkiq's own, renewed by beat
        crl = authority.latest_crl(session, ca)
        if crl is None:
            continue
        rows.setdefault(f"pkiq:{ca.name}", {
            "issuer": ca.subject, "issuer_key": None, "origin": f"pkiq CA {ca.name}",
            "source": None, "crl_number": str(crl.number), "entries": crl.entries,
            "this_update": _iso(crl.this_update), "next_update": _iso(crl.next_update),
            "installed_at": None, "expired": crl.next_update <= now,
            "near_next_update": now < crl.next_update <= now + warn})
    for status in session.scalars(select(CrlIssuerStatus)):
        row = rows.setdefault(status.issuer_key, {"issuer": status.issuer,
                                                  "issuer_key": status.issuer_key,
                                                  "crl_number": None})
        row.update(last_attempt=_iso(status.last_attempt_at),
                   last_success=_iso(status.last_success_at), error=status.error)
    return sorted(rows.values(), key=lambda r: r["issuer"])


@crl_group.command("status")
@json_option
@click.pass_obj
def crl_status(app: App, as_json):
    """Per distribution point and per issuer: last attempt, last success, CRL facts, errors."""
    from scheduler.service import last_run

    now = app.clock()
    with app.transaction() as session:
        settings = _settings_info(session, app)
        warn = dt.timedelta(hours=settings["warn_hours"])
        points = [_dp_info(p) for p in crl_config.list_points(session)]
        issuers = _issuer_rows(session, now, warn)
        run = last_run(session)
    warnings = [f"the CRL for {i['issuer']} " + ("EXPIRED at " if i.get("expired") else
                                                 "reaches nextUpdate at ") + i["next_update"]
                for i in issuers if i.get("expired") or i.get("near_next_update")]
    info = {"settings": settings, "last_run": run, "distribution_points": points,
            "issuers": issuers, "warnings": warnings}
    _warn(warnings)

    def text() -> str:
        lines = [_settings_text(settings)]
        if run:
            summary = run["summary"] or {}
            outcome = (f"aborted: {summary['aborted']}" if summary.get("aborted") else
                       f"{summary.get('points', 0)} distribution point(s), "
                       f"{summary.get('failed', 0)} failed" if run["finished_at"]
                       else "still running, or interrupted")
            lines.append(f"last refresh: {run['trigger']} at {run['started_at']}: {outcome}")
        lines.append("\ndistribution points:")
        for p in points:
            state = f"error: {p['error']}" if p["error"] else (
                f"ok, HTTP {p['http_status']}, {p['bytes']} bytes, {p['crls']} CRL(s)"
                if p["last_success"] else "not fetched yet")
            lines.append(f"  {p['url']}\n    last attempt {p['last_attempt'] or '-'}, "
                         f"last success {p['last_success'] or '-'}: {state}")
        lines.append("\nissuers:")
        for i in issuers:
            crl = (f"{i['origin']} CRL {i['crl_number']}, {i['entries']} entries, "
                   f"thisUpdate {i['this_update']}, nextUpdate {i['next_update']}"
                   if i.get("this_update") else "no CRL installed")
            lines.append(f"  {i['issuer']}\n    {crl}" + (
                f"\n    last attempt {i['last_attempt']}: error: {i['error']}"
                if i.get("error") else ""))
        return "\n".join(lines)

    _emit(info, as_json, text)


@crl_group.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_obj
def crl_upload(app: App, file, as_json):
    """Upload a CRL (PEM or DER) by hand; it replaces the previous manual CRL of its issuer.
    A fetched CRL of the same issuer overrides it once it is newer."""
    decoded, _notes = decode_crls(_read_input(file))
    if len(decoded) != 1:
        raise BadInput(f"{file} holds {len(decoded)} CRLs; upload one at a time")
    item = decoded[0]
    with app.transaction() as session:
        settings = crl_config.get_settings(session, app.clock())
        outcome = crl_install.upload(session, item.crl, item.der, app.clock(),
                                     skew=dt.timedelta(seconds=settings.skew_seconds),
                                     source=file.name)
        info = {"issuer": outcome.issuer, "action": outcome.action,
                "crl_number": outcome.number, "entries": outcome.row.entries,
                "next_update": _iso(outcome.row.next_update)}
    _emit(info, as_json, f"{outcome.action} manual CRL for {outcome.issuer}"
          + (f" (CRL {outcome.number})" if outcome.number is not None else ""))


@crl_group.command("remove")
@click.argument("issuer")
@click.option("--fetched", is_flag=True,
              help="Forget the fetched CRL instead (a CA rebuilt with CRL numbers restarted: "
                   "the next refresh then installs what its distribution point serves).")
@json_option
@click.pass_obj
def crl_remove(app: App, issuer, fetched, as_json):
    """Remove the manually uploaded CRL of an issuer (by id, issuer key or issuer DN)."""
    origin = "fetched" if fetched else "manual"
    with app.transaction() as session:
        row = crl_install.remove_current(session, issuer, app.clock(), origin=origin)
        info = {"removed": row.issuer, "origin": origin, "crl_number": row.number}
    _emit(info, as_json, f"removed the {origin} CRL of {row.issuer}")


@crl_group.command("show")
@click.argument("issuer")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--der", is_flag=True, help="DER instead of PEM.")
@json_option
@click.pass_obj
def crl_show(app: App, issuer, out, der, as_json):
    """Print or save the CRL in force for an issuer (fetched or manual)."""
    output = Output(out, der)
    with app.transaction() as session:
        row = crl_install.effective(session, crl_install.find_current(session, issuer)
                                    .issuer_key)
        info = {"issuer": row.issuer, "origin": row.origin, "crl_number": row.number,
                "entries": row.entries, "next_update": _iso(row.next_update)}
        der_bytes = row.der
    _deliver(output, x509.load_der_x509_crl(der_bytes), info, as_json,
             f"{info['origin']} CRL of {info['issuer']}")
