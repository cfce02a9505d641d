"""``pkiq token`` (API tokens) and ``pkiq audit`` (the audit log), over ``service.tokens``."""

from __future__ import annotations

import click

from ca.tokens import ROLES
from service import tokens as token_service

from .cli_common import PARTIAL, emit, json_option, pass_service


@click.group("token")
def token_group():
    """API tokens: create (shown once), list, revoke."""


@token_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="requester: submit, read its own jobs; approver: also approve, reject, "
                   "revoke; admin: everything.")
@click.option("--ca", "cas", multiple=True, metavar="CA",
              help="Limit the token to this CA (repeat for more); default every CA.")
@click.option("--days", type=int, help="Expire after this many days (default: never).")
@json_option
@pass_service
def token_create(ctx, name, role, cas, days, as_json):
    """Make a token. Its secret is printed this once: pkiq keeps only its hash."""
    view = token_service.create_token(ctx, name, role, list(cas) or None, days)
    emit(view, as_json, lambda: (
        f"{view['token']}\n"
        f"token {view['name']} ({view['role']}"
        + (f", CA {', '.join(view['cas'])}" if view["cas"] else "") + "): keep it now, it is "
        "not shown again; send it as Authorization: Bearer <token>"))


@token_group.command("list")
@json_option
@pass_service
def token_list(ctx, as_json):
    """Tokens (never their secrets)."""
    rows = token_service.list_tokens(ctx)
    emit(rows, as_json, lambda: "\n".join(
        f"{r['name']:<24} {r['role']:<9} {r['prefix']}... "
        f"{','.join(r['cas']) if r['cas'] else 'every CA':<16} "
        f"{'REVOKED ' + r['revoked_at'][:16] if r['revoked_at'] else 'active'}"
        f"{' last used ' + r['last_used_at'][:16] if r['last_used_at'] else ''}"
        for r in rows) or "no tokens")


@token_group.command("revoke")
@click.argument("name")
@json_option
@pass_service
def token_revoke(ctx, name, as_json):
    """Revoke a token by name (or its pkiq_ prefix): refused from the next request."""
    view = token_service.revoke_token(ctx, name)
    emit(view, as_json, f"token {view['name']} revoked")


@click.group("audit", invoke_without_command=True)
@click.option("--action", help="Only actions starting with this (job., cert.revoke, ...).")
@click.option("--target", help="Only this target (job:12, ca:Root/serial:1A, token:ci).")
@click.option("--actor", help="Only this actor (a token name, an OS user).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="At most this many rows.")
@json_option
@click.pass_context
def audit_group(click_ctx, action, target, actor, limit, as_json):
    """The audit log, newest first: who changed what, when, from where."""
    if click_ctx.invoked_subcommand is not None:
        return
    from .cli_common import make_context

    ctx = click_ctx.obj or make_context()
    rows = token_service.audit_entries(ctx, action=action, target=target, actor=actor,
                                       limit=limit)
    emit(rows, as_json, lambda: "\n".join(
        f"{r['id']:>7} {r['at'][:19]}Z {r['actor']:<20} {r['via']:<6} {r['action']:<18} "
        f"{r['target'] or '-'}" for r in rows) or "the audit log is empty")


@audit_group.command("verify")
@json_option
@pass_service
def audit_verify(ctx, as_json):
    """Check the hash chain: every row unchanged, none removed or inserted. Exit 9 if not."""
    verdict = token_service.audit_verify(ctx)
    emit(verdict, as_json, lambda: (
        f"the audit log's {verdict['checked']} row(s) are intact" if verdict["ok"] else
        f"BROKEN at row {verdict['broken_at']}: {verdict['reason']} "
        f"({verdict['checked']} row(s) checked before it)"))
    if not verdict["ok"]:
        click.get_current_context().exit(PARTIAL)
