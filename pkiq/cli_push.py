"""``pkiq node api|push|restart|drift``, ``pkiq cluster rollout`` and ``pkiq rollout``:
pushing stores to Expressways over their REST API, over ``service.node_api``,
``service.push`` and ``service.drift``."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

import click

from ca.errors import BadInput, WrongPassphrase
from ca.expressway_api import PROFILE_KEYS, RELEASES, parse_overrides
from service import drift as drift_service
from service import node_api
from service import push as push_service

from .cli_common import PARTIAL, emit, json_option, pass_service, passphrase_options
from .cli_common import read_passphrase as _read_passphrase

WHAT = "node keys and node passwords (the service passphrase)"


def passphrase_or_none(ctx, file: Path | None, env: str | None) -> bytes | None:
    """The service passphrase if one is given or configured; None if none is (a push to a
    node whose password sits in a file, with a published store, needs none)."""
    try:
        return _read_passphrase(ctx, file, env, what=WHAT)
    except WrongPassphrase:
        if file is not None or env is not None:
            raise
        return None


# ---------------------------------------------------------------- node api

@click.group("api")
def api_group():
    """How pkiq reaches a node's REST API: address, administrator, TLS trust, endpoints."""


@api_group.command("set")
@click.argument("fqdn")
@click.option("--address", help="Where to connect, if not the FQDN (an IP or another name); "
              "the certificate is still checked for the FQDN. Empty: the FQDN.")
@click.option("--port", type=int, help="HTTPS port (default 443).")
@click.option("--username", help="The administrator account.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the "
              "password; stored sealed under the service passphrase.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input "
              "(first line); stored sealed.")
@click.option("--password-file", type=click.Path(path_type=Path),
              help="A file (mode 600) whose first line is the password, read at each use; "
                   "nothing is stored.")
@click.option("--release", type=click.Choice(sorted(RELEASES), case_sensitive=False),
              help="Whose endpoint names to use: x8.10 (/api/provisioning/...) or v1 "
                   "(/api/v1/provisioning/...).")
@click.option("--endpoint", "endpoints", multiple=True, metavar="NAME=PATH",
              help=f"Set one endpoint or field ({', '.join(PROFILE_KEYS)}); an empty PATH "
                   "switches an optional call off (raml= skips the RAML check).")
@click.option("--crl-fetch-within", "crl_fetch_hours", type=int, metavar="HOURS",
              help="Drift when the node has not fetched its CRL bundle from pkiq for this "
                   "long (default 26; 0: not checked).")
@passphrase_options(what=WHAT)
@json_option
@pass_service
def api_set(ctx, fqdn, address, port, username, password_env, password_stdin, password_file,
            release, endpoints, crl_fetch_hours, passphrase_file, passphrase_env, as_json):
    """Set how pkiq reaches a node's REST API. The password never goes on the command
    line (ps would show it)."""
    given = [bool(password_env), password_stdin, password_file is not None]
    if sum(given) > 1:
        raise BadInput("give the password one way: --password-env, --password-stdin or "
                       "--password-file")
    password = None
    if password_env:
        value = os.environ.get(password_env)
        if not value:
            raise BadInput(f"environment variable {password_env} (the node's password) is "
                           "not set")
        password = value.encode()
    elif password_stdin:
        line = sys.stdin.buffer.readline(4097).rstrip(b"\r\n")
        if not line:
            raise BadInput("no password on standard input")
        password = line
    passphrase = passphrase_or_none(ctx, passphrase_file, passphrase_env) \
        if password is not None else None
    changes = node_api.ApiChanges(
        address=address, port=port, username=username, password=password,
        password_file=str(password_file) if password_file is not None else None,
        release=release, endpoints=parse_overrides(endpoints), crl_fetch_hours=crl_fetch_hours)
    view = node_api.set_api(ctx, fqdn, changes, passphrase=passphrase)
    emit(view, as_json, lambda: _api_text(view))


def _api_text(view: dict) -> str:
    lines = [f"{view['node']}: https://{view['address']}:{view['port']} as "
             f"{view['username']}, password {view['password'] or 'not set'}",
             f"  TLS: {view['tls']}" + (f" ({view['pin_sha256']})" if view["pin_sha256"]
                                         else ""),
             f"  release {view['endpoints']['release']}; CRL fetch checked within "
             f"{view['crl_fetch_hours'] or '-'} h"]
    lines += [f"  {k}: {v or '(off)'}" for k, v in view["endpoints"].items() if k != "release"]
    return "\n".join(lines)


@api_group.command("show")
@click.argument("fqdn")
@json_option
@pass_service
def api_show(ctx, fqdn, as_json):
    """A node's REST settings (the password only as where it comes from)."""
    view = node_api.show_api(ctx, fqdn)
    emit(view, as_json, lambda: _api_text(view))


@api_group.command("remove")
@click.argument("fqdn")
@json_option
@pass_service
def api_remove(ctx, fqdn, as_json):
    """Forget a node's REST settings (and its sealed password)."""
    view = node_api.remove_api(ctx, fqdn)
    emit(view, as_json, f"{fqdn}: REST settings removed")


@api_group.command("pin")
@click.argument("fqdn")
@click.option("--fingerprint", help="The SHA-256 you read on the node itself: pinned only "
              "if the node presents exactly that.")
@click.option("--unpin", is_flag=True, help="Trust the node's certificate by its chain "
              "again (trusted list + system CAs).")
@json_option
@pass_service
def api_pin(ctx, fqdn, fingerprint, unpin, as_json):
    """Trust a node's HTTPS certificate by fingerprint (a factory self-signed one, say).
    Without --fingerprint: show what the node presents, pin nothing."""
    view = node_api.pin(ctx, fqdn, "" if unpin else fingerprint)
    if unpin:
        emit(view, as_json, f"{fqdn}: unpinned; its certificate must chain to its trusted "
             "list or the system CAs")
        return
    if view["pinned"]:
        emit(view, as_json, f"{fqdn}: pinned SHA-256 {view['pinned']}")
        return
    emit(view, as_json, lambda: (
        f"{fqdn} presents {view['subject']} (issuer {view['issuer']}, notAfter "
        f"{view['not_after'][:10]})\n  SHA-256 {view['presented_sha256']}\nCompare it with "
        f"the node's console, then: pkiq node api pin {fqdn} --fingerprint "
        f"{view['presented_sha256']}"))
    click.get_current_context().exit(PARTIAL)


# ---------------------------------------------------------------- pushing

def _print_step(step: push_service.Step) -> None:
    click.echo(f"  {step.state:<9} {step.message}", err=True)


def run_rollout(ctx, rollout_id: int, passphrase: bytes | None, queue: bool,
                as_json: bool) -> None:
    """In the foreground, waiting out retries, or handed to the workers (``--queue``)."""
    if queue:
        from scheduler.schedule import ROLLOUT_TASK
        from worker.celery_app import make_app

        make_app(ctx.settings).send_task(ROLLOUT_TASK, args=[rollout_id])
        view = push_service.show(ctx, rollout_id)
        emit(view, as_json, f"rollout {rollout_id} handed to the workers: pkiq rollout show "
             f"{rollout_id}")
        return
    report = None if as_json else _print_step
    while True:
        view = push_service.advance(ctx, rollout_id, passphrase=passphrase, report=report)
        if view["state"] != "waiting":
            break
        wait = (dt.datetime.fromisoformat(view["next_try_at"]) - ctx.clock()).total_seconds()
        time.sleep(max(wait, 0.1))
    if view["state"] == "running":  # another process (a worker) holds the current push
        view["error"] = (f"another process is pushing to {view['current']} now: follow it "
                         f"with pkiq rollout show {rollout_id}")
    emit(view, as_json, lambda: _rollout_text(view))
    if view["state"] != "done":
        # stopped: the stopping error's own code (10 refused, 11 unreachable, 12 untrusted)
        code = view["error_code"] if view["state"] == "stopped" and view["error_code"] else \
            PARTIAL
        click.get_current_context().exit(code)


def _rollout_text(view: dict) -> str:
    lines = [f"rollout {view['id']} to {view['target']}: {view['state']}"
             + (f" - {view['error']}" if view["error"] else "")]
    for job in view["jobs"]:
        result = job["result"] or {}
        extra = []
        if result.get("added_cas"):
            extra.append(f"{len(result['added_cas'])} CA(s) added")
        if result.get("uploaded_server"):
            extra.append("server certificate uploaded")
        if result.get("restarted"):
            extra.append("restarted")
        if result.get("handshake"):
            extra.append(result["handshake"])
        extra += [f"node warns: {w}" for w in result.get("warnings", [])]
        lines.append(f"  {job['node']:<40} {job['state']:<9} attempts {job['attempts']}"
                     + (f", generation {job['generation']}" if job["generation"] else "")
                     + (f": {'; '.join(extra)}" if extra else "")
                     + (f"\n    error: {job['error']}" if job["error"] else ""))
    return "\n".join(lines)


@click.command("push")
@click.argument("fqdn")
@click.option("--restart", is_flag=True, help="Restart the node when its server certificate "
              "changed, and verify it then presents the new one. Without it pkiq never "
              "restarts a node: it says a restart is needed.")
@click.option("--queue", is_flag=True, help="Hand the push to the workers instead of "
              "running it here.")
@passphrase_options(what=WHAT)
@json_option
@pass_service
def node_push(ctx, fqdn, restart, queue, passphrase_file, passphrase_env, as_json):
    """Push the node's store over REST: missing trusted CAs, then its server certificate and
    key; read back and compare; check the certificate its HTTPS port presents."""
    passphrase = passphrase_or_none(ctx, passphrase_file, passphrase_env)
    view = push_service.start(ctx, node=fqdn, restart=restart, reason="pkiq node push")
    run_rollout(ctx, view["id"], passphrase, queue, as_json)


@click.command("restart")
@click.argument("fqdn")
@click.option("--yes", is_flag=True, help="Do it (a restart drops the node's calls).")
@passphrase_options(what=WHAT)
@json_option
@pass_service
def node_restart(ctx, fqdn, yes, passphrase_file, passphrase_env, as_json):
    """Restart a node through its REST API, so a new server certificate takes effect."""
    if not yes:
        raise BadInput(f"restarting {fqdn} drops its calls and registrations: add --yes")
    passphrase = passphrase_or_none(ctx, passphrase_file, passphrase_env)
    view = push_service.restart_node(ctx, fqdn, passphrase=passphrase)
    emit(view, as_json, f"{fqdn}: restart requested")


@click.command("drift")
@click.argument("fqdn", required=False)
@passphrase_options(what=WHAT)
@json_option
@pass_service
def node_drift(ctx, fqdn, passphrase_file, passphrase_env, as_json):
    """Read what each node holds and compare it with its store: server certificate, trusted
    CAs missing or extra, CRL bundle fetched recently. Exit 9 on any drift."""
    passphrase = passphrase_or_none(ctx, passphrase_file, passphrase_env)
    rows = drift_service.check(ctx, fqdn, passphrase=passphrase)

    def text():
        lines = []
        for row in rows:
            lines.append(f"{row['node']}: {'in sync' if row['in_sync'] else 'DRIFT'}")
            lines += [f"  {f['severity'].upper():<8} {f['kind']}: {f['text']}"
                      for f in row["drift"]]
        return "\n".join(lines) or "no node has REST settings (pkiq node api set)"
    emit(rows, as_json, text)
    if any(not row["in_sync"] for row in rows):
        click.get_current_context().exit(PARTIAL)


@click.command("rollout")
@click.argument("name")
@click.option("--restart", is_flag=True, help="Restart each peer whose server certificate "
              "changed, and verify it presents the new one before the next peer.")
@click.option("--first", metavar="NODE", help="The peer to start with (default: the first "
              "by name).")
@click.option("--resume", is_flag=True, help="Go on with the cluster's stopped or paused "
              "rollout from the peer where it stopped.")
@click.option("--queue", is_flag=True, help="Hand the rollout to the workers.")
@passphrase_options(what=WHAT)
@json_option
@pass_service
def cluster_rollout(ctx, name, restart, first, resume, queue, passphrase_file, passphrase_env,
                    as_json):
    """Publish the cluster's stores to its peers one at a time: the first peer is verified
    (read-back and TLS handshake) before the next is touched; a failure stops the rollout
    and leaves the rest untouched."""
    passphrase = passphrase_or_none(ctx, passphrase_file, passphrase_env)
    if resume:
        if restart or first:
            raise BadInput("--resume goes on as the rollout was started: no --restart or "
                           "--first")
        rollout_id = push_service.find_open(ctx, cluster=name)
        push_service.resume(ctx, rollout_id)
    else:
        rollout_id = push_service.start(ctx, cluster=name, restart=restart, first=first,
                                        reason="pkiq cluster rollout")["id"]
    run_rollout(ctx, rollout_id, passphrase, queue, as_json)


# ---------------------------------------------------------------- rollouts

@click.group("rollout")
def rollout_group():
    """REST rollouts to Expressway clusters and nodes: list, show, resume, cancel."""


@rollout_group.command("list")
@json_option
@pass_service
def rollout_list(ctx, as_json):
    """The latest rollouts."""
    rows = push_service.list_rollouts(ctx)
    emit(rows, as_json, lambda: "\n".join(
        f"{r['id']:>5} {r['target']:<40} {r['state']:<9} {r['position']}/{len(r['peers'])}"
        f" {r['created_at'][:16]}" for r in rows) or "no rollouts")


@rollout_group.command("show")
@click.argument("rollout_id", type=int)
@json_option
@pass_service
def rollout_show(ctx, rollout_id, as_json):
    """One rollout and each peer's push."""
    view = push_service.show(ctx, rollout_id)
    emit(view, as_json, lambda: _rollout_text(view))


@rollout_group.command("resume")
@click.argument("rollout_id", type=int)
@click.option("--queue", is_flag=True, help="Hand it to the workers.")
@passphrase_options(what=WHAT)
@json_option
@pass_service
def rollout_resume(ctx, rollout_id, queue, passphrase_file, passphrase_env, as_json):
    """Go on from the peer where the rollout stopped or paused."""
    passphrase = passphrase_or_none(ctx, passphrase_file, passphrase_env)
    push_service.resume(ctx, rollout_id)
    run_rollout(ctx, rollout_id, passphrase, queue, as_json)


@rollout_group.command("cancel")
@click.argument("rollout_id", type=int)
@json_option
@pass_service
def rollout_cancel(ctx, rollout_id, as_json):
    """Give up a rollout: peers not yet pushed stay as they are."""
    view = push_service.cancel(ctx, rollout_id)
    emit(view, as_json, f"rollout {rollout_id} cancelled")


# What pkiq.cli adds to ``pkiq node`` and ``pkiq cluster`` when it loads them.
node_commands = [api_group, node_push, node_restart, node_drift]
cluster_commands = [cluster_rollout]
