"""``pkiq trust ...`` (the trusted CA list) and ``pkiq crl ...`` (CRL management: the
distribution points, the daily update time, refresh, status, manual CRLs): the guide's
"CRL management" and "Managing the trusted CA list" pages as commands over
``service.trust`` and ``service.crl``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization

from ca.errors import BadInput
from ca.x509text import decode_all, render
from service import crl as crl_service
from service import trust as trust_service

from .cli_common import (
    PARTIAL,
    Output,
    deliver,
    emit,
    json_option,
    output_options,
    pass_service,
    read_input,
    warn,
)

# ====================================================================== trust


@click.group("trust")
def trust_group():
    """The trusted CA list: the anchors CRLs are checked against."""


def _trust_line(info: dict) -> str:
    return (f"{info['id']:>4}  {info['sha256'][:16]}  {info['not_after'][:10]}  "
            f"{info['origin']:<8}  {info['subject']}")


@trust_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@pass_service
def trust_add(ctx, file, as_json):
    """Append the CA certificates of a PEM bundle (duplicates are ignored)."""
    info = trust_service.add(ctx, read_input(file))
    warn(info["warnings"])
    emit(info, as_json, lambda: "\n".join(
        [f"added {len(info['added'])} CA certificate(s), {len(info['duplicates'])} "
         "already in the list"] + [_trust_line(r) for r in info["added"]]))


@trust_group.command("list")
@json_option
@pass_service
def trust_list(ctx, as_json):
    """One line per trusted CA: id, fingerprint, notAfter, origin, subject."""
    info = trust_service.list_entries(ctx)
    warn(info["warnings"])
    emit(info, as_json, "\n".join(_trust_line(r) for r in info["entries"])
         or "the trusted CA list is empty")


@trust_group.command("show")
@click.argument("ref", required=False)
@click.option("--pem", is_flag=True, help="The PEM file itself, not the decoded form.")
@json_option
@pass_service
def trust_show(ctx, ref, pem, as_json):
    """Show one trusted CA (by id or fingerprint), or all, decoded or as PEM."""
    certs = trust_service.certificates(ctx, ref)
    if pem or as_json:
        pems = [c.public_bytes(serialization.Encoding.PEM).decode() for _, c in certs]
        emit([{**info, "pem": p} for (info, _), p in zip(certs, pems, strict=True)], as_json,
             "".join(pems).rstrip("\n"))
        return
    decoded = [item for _, c in certs
               for item in decode_all(c.public_bytes(serialization.Encoding.DER))]
    click.echo("\n\n".join(render(item) for item in decoded) or "the list is empty")


@trust_group.command("remove")
@click.argument("refs", nargs=-1, required=True)
@json_option
@pass_service
def trust_remove(ctx, refs, as_json):
    """Delete entries by id or fingerprint (nothing is deleted if one is not found)."""
    info = trust_service.remove(ctx, list(refs))
    warn(info["warnings"])
    emit(info, as_json, "\n".join(f"removed {r['subject']}" for r in info["removed"]))


@trust_group.command("reset")
@json_option
@pass_service
def trust_reset(ctx, as_json):
    """Reset the list to the default: pkiq's own CAs only."""
    info = trust_service.reset(ctx)
    emit(info, as_json, f"the trusted CA list now holds pkiq's {len(info['entries'])} CA(s)")


# ====================================================================== crl

@click.group("crl")
def crl_group():
    """CRLs from outside: distribution points, the nightly refresh, status, uploads."""


@crl_group.group("dp")
def dp_group():
    """The HTTP(S) distribution points the nightly refresh fetches."""


@dp_group.command("add")
@click.argument("urls", nargs=-1, required=True)
@json_option
@pass_service
def dp_add(ctx, urls, as_json):
    """Add distribution point URLs (http:// or https:// only)."""
    added = crl_service.add_points(ctx, list(urls))
    emit({"added": added}, as_json, f"added {len(added)} distribution point(s)")


@dp_group.command("remove")
@click.argument("urls", nargs=-1, required=True)
@json_option
@pass_service
def dp_remove(ctx, urls, as_json):
    """Remove distribution points (installed CRLs stay until replaced)."""
    removed = crl_service.remove_points(ctx, list(urls))
    emit({"removed": removed}, as_json, f"removed {len(removed)} distribution point(s)")


@dp_group.command("list")
@json_option
@pass_service
def dp_list(ctx, as_json):
    """The configured URLs, one per line (the form 'crl dp set' reads back)."""
    points = crl_service.list_points(ctx)
    emit(points, as_json, "\n".join(p["url"] + ("  # from a trusted CA's CDP"
                                                if p["origin"] == "cdp" else "")
                                    for p in points))


@dp_group.command("set")
@click.argument("file", type=click.File("r"))
@json_option
@pass_service
def dp_set(ctx, file, as_json):
    """Replace the list with the URLs of FILE ('-' for stdin), one per line."""
    info = crl_service.replace_points(ctx, file.read(1 << 20))
    emit(info, as_json, f"{info['count']} distribution point(s): {len(info['added'])} added, "
         f"{len(info['removed'])} removed")


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
@pass_service
def crl_schedule(ctx, at, enabled, spread, as_json):
    """Show or change when the nightly refresh runs (beat picks it up on its next tick)."""
    info = crl_service.update_settings(ctx, update_time=at, enabled=enabled,
                                       spread_minutes=spread)
    emit(info, as_json, lambda: _settings_text(info))


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
@pass_service
def crl_settings(ctx, timeout, max_size, parallel, use_cdp, skew, warn_hours,
                 overlap_hours, as_json):
    """Show or change the fetch limits and margins."""
    info = crl_service.update_settings(
        ctx, timeout_seconds=timeout, max_bytes=max_size, parallelism=parallel,
        use_cdp=use_cdp, skew_seconds=skew, warn_hours=warn_hours,
        overlap_hours=overlap_hours)
    emit(info, as_json, lambda: _settings_text(info))


@crl_group.command("refresh")
@json_option
@pass_service
def crl_refresh(ctx, as_json):
    """Fetch every distribution point now (refused while another refresh runs)."""
    report = crl_service.refresh_now(ctx)

    def text() -> str:
        lines = []
        for point in report.points:
            line = f"{point.outcome:<12} {point.url}"
            for crl in point.crls:
                number = crl.get("number")
                scope = crl.get("scope")
                line += (f"\n             {crl['action']}: {crl['issuer']}"
                         + (f" [scope {scope}]" if scope and scope != "complete" else "")
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

    emit(report.as_dict(), as_json, text)
    if report.failed:
        sys.exit(PARTIAL)


def _status_text(info: dict) -> str:
    run, points, issuers = info["last_run"], info["distribution_points"], info["issuers"]
    lines = [_settings_text(info["settings"])]
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
    lines.append("\nissuers (each judged after a run over all of its distribution points: "
                 "refreshed when one of them refreshed it):")
    lines.extend(_issuer_lines(issuers))
    return "\n".join(lines)


def _issuer_lines(issuers: list[dict]) -> list[str]:
    """An issuer, then its CRL, or one line per scope when it has several (or only a
    partial one), then its last error."""
    groups: dict[tuple, list[dict]] = {}
    for i in issuers:
        groups.setdefault((i["issuer"], i.get("issuer_key") or i.get("origin")), []).append(i)
    lines, partitioned = [], False
    for rows in groups.values():
        lines.append(f"  {rows[0]['issuer']}")
        scoped = len(rows) > 1 or rows[0].get("scope") not in (None, "complete")
        partitioned = partitioned or scoped
        for i in rows:
            crl = (f"{i['origin']} CRL {i['crl_number']}, {i['entries']} entries, "
                   f"thisUpdate {i['this_update']}, nextUpdate {i['next_update']}"
                   if i.get("this_update") else "no CRL installed")
            lines.append("    " + (f"scope {i['scope']}: " if scoped and i.get("scope") else "")
                         + crl + (f" ({i['note']})" if i.get("note") else ""))
        if rows[0].get("error"):
            lines.append(f"    last run {rows[0]['last_attempt']}: not refreshed by any of its "
                         f"distribution points: {rows[0]['error']}")
        elif rows[0].get("refreshed_from"):
            lines.append(f"    last run {rows[0]['last_attempt']}: refreshed from "
                         f"{rows[0]['refreshed_from']}")
    if partitioned:
        lines.append("\nA scope is what a CRL's issuingDistributionPoint says it covers (one "
                     "distribution point, user or CA certificates, some reasons; 'complete' "
                     "without it): a CRL replaces only the one of its own scope, and every "
                     "scope of an issuer must stay current.")
    return lines


@crl_group.command("status")
@json_option
@pass_service
def crl_status(ctx, as_json):
    """Per distribution point and per issuer: last attempt, last success, CRL facts, errors."""
    info = crl_service.status(ctx)
    warn(info["warnings"])
    emit(info, as_json, lambda: _status_text(info))


@crl_group.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Install it even though it is older than the installed CRL of its scope "
                   "(by CRL number, else thisUpdate); recorded on the CRL.")
@json_option
@pass_service
def crl_upload(ctx, file, force, as_json):
    """Upload a CRL (PEM or DER) by hand; it replaces the previous manual CRL of its issuer
    and scope. A fetched CRL of the same scope overrides it once it is newer."""
    info = crl_service.upload(ctx, read_input(file), source=file.name, force=force)
    emit(info, as_json, lambda: f"{info['action']} manual CRL for {info['issuer']}"
         + (f" (CRL {info['crl_number']})" if info["crl_number"] is not None else "")
         + (f", scope {info['scope']}" if info["scope"] != "complete" else "")
         + (f"; {info['note']}" if info["note"] and info["action"] == "installed" else "")
         + ("" if info["in_force"] else "; not in force: the fetched CRL is newer"))


_SCOPE_HELP = ("The scope, as 'crl status' shows it ('complete', or what the CRL's "
               "issuingDistributionPoint names), for an issuer with several.")


@crl_group.command("remove")
@click.argument("issuer")
@click.option("--fetched", is_flag=True,
              help="Forget the fetched CRL instead (a CA rebuilt with CRL numbers restarted: "
                   "the next refresh then installs what its distribution point serves).")
@click.option("--scope", help=_SCOPE_HELP)
@json_option
@pass_service
def crl_remove(ctx, issuer, fetched, scope, as_json):
    """Remove the manually uploaded CRL of an issuer (by CRL id, issuer key or issuer DN,
    the DN compared as RFC 5280 does: case and spacing aside)."""
    info = crl_service.remove(ctx, issuer, fetched=fetched, scope=scope)
    emit(info, as_json, f"removed the {info['origin']} CRL of {info['removed']}"
         + (f", scope {info['scope']}" if info["scope"] != "complete" else ""))


@crl_group.command("show")
@click.argument("issuer")
@click.option("--scope", help=_SCOPE_HELP)
@output_options("CRL")
@json_option
@pass_service
def crl_show(ctx, issuer, scope, out, der, as_json):
    """Print or save the CRL in force for an issuer (fetched or manual). An issuer with
    several scopes gives one PEM CRL per scope, complete first (with --json: a list)."""
    output = Output(out, der)
    found = crl_service.crls_in_force(ctx, issuer, scope=scope)
    if len(found) == 1:
        info, crl = found[0]
        deliver(output, crl, info, as_json, f"{info['origin']} CRL of {info['issuer']}")
        return
    if der:
        raise BadInput(f"{found[0][0]['issuer']} has CRLs of {len(found)} scopes and DER holds "
                       "one CRL; name one with --scope, or leave out --der for all as PEM")
    pems = [crl.public_bytes(serialization.Encoding.PEM) for _, crl in found]
    output.stage(b"".join(pems))
    if as_json:
        if output.path is not None:
            output.commit()
        emit({"issuer": found[0][0]["issuer"], "issuer_key": found[0][0]["issuer_key"],
              "crls": [{**info, "pem": pem.decode()}
                       for (info, _), pem in zip(found, pems, strict=True)]}, True, "")
        return
    output.commit()
    if output.path is not None:
        click.echo(f"{len(found)} CRLs of {found[0][0]['issuer']} (one per scope) -> "
                   f"{output.path}", err=True)


@crl_group.command("history")
@click.argument("issuer")
@json_option
@pass_service
def crl_history(ctx, issuer, as_json):
    """The CRLs installed for an issuer, current and replaced, newest first: id, origin,
    CRL number, thisUpdate, state, scope, and any note (an upload forced over a newer)."""
    rows = crl_service.history(ctx, issuer)
    emit(rows, as_json, lambda: "\n".join(
        f"{r['id']:>6}  {r['origin']:<7}  CRL {r['crl_number'] or '-':<6}  "
        f"{r['this_update']}  {'current' if r['current'] else 'replaced ' + str(r['replaced_at'])}"
        + (f"  scope {r['scope']}" if r["scope"] != "complete" else "")
        + (f"  ({r['note']})" if r["note"] else "") for r in rows))
