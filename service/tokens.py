"""API tokens (``pkiq token``, and the API's own authentication) and the audit log
(``pkiq audit``): one code path for the CLI and the web app."""

from __future__ import annotations

from ca import audit, tokens
from ca.models import ApiToken
from ca.tokens import Grant

from .context import ServiceContext


def create_token(ctx: ServiceContext, name: str, role: str, cas: list[str] | None,
                 days: int | None = None) -> dict:
    """The token's view and, this once, its secret."""
    with ctx.transaction() as session:
        row, secret = tokens.create(session, name, role, cas or None,
                                    created_by=ctx.actor.name, now=ctx.clock(), days=days)
        view = tokens.view(row)
        ctx.audit(session, "token.create", f"token:{row.name}",
                  {"role": role, "cas": row.cas, "expires_at": view["expires_at"]})
    return {**view, "token": secret}


def list_tokens(ctx: ServiceContext) -> list[dict]:
    with ctx.transaction() as session:
        return [tokens.view(row) for row in tokens.list_tokens(session)]


def revoke_token(ctx: ServiceContext, ref: str) -> dict:
    with ctx.transaction() as session:
        row = tokens.revoke(session, ref, ctx.clock())
        ctx.audit(session, "token.revoke", f"token:{row.name}", {})
        return tokens.view(row)


def authenticate(ctx: ServiceContext, presented: str | None) -> Grant:
    """The grant of a presented bearer token; its last use noted (at most once a minute,
    so a busy client does not turn every read into a write)."""
    now = ctx.clock()
    with ctx.read_transaction() as session:
        row = tokens.authenticate(session, presented, now)
        grant = Grant.of(row)
        stale = row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60
    if stale:
        with ctx.transaction() as session:
            session.get(ApiToken, grant.token_id).last_used_at = now
    return grant


def audit_entries(ctx: ServiceContext, *, action: str | None = None, target: str | None = None,
                  actor: str | None = None, after: int | None = None, limit: int = 100
                  ) -> list[dict]:
    with ctx.read_transaction() as session:
        return [audit.view(e) for e in audit.entries(session, action=action, target=target,
                                                     actor=actor, after=after, limit=limit)]


def audit_verify(ctx: ServiceContext) -> dict:
    with ctx.read_transaction() as session:
        return audit.verify(session).view()
