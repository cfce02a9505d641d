"""API tokens and roles.

A token is ``pkiq_`` and 43 URL-safe characters (256 random bits), shown once when made and
kept only as its SHA-256. Roles nest: an approver can do what a requester can (on every
job, not only its own), an admin what an approver can. A token may be limited to named
CAs: it then neither sees nor touches the others'.

    requester  submit jobs; read its own jobs and their certificates
    approver   also: every job of its CAs; approve, reject, retry; revoke
    admin      also: CAs, settings, the trusted CA list, nodes, tokens, the audit log
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import BadInput, Conflict, NotFound, PkiqError
from .models import ApiToken

ROLES = ("requester", "approver", "admin")
PREFIX = "pkiq_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SHAPE = re.compile(r"^pkiq_[A-Za-z0-9_-]{43}$")


class Unauthorized(PkiqError):
    """No token, or one pkiq does not know (or revoked, or expired): 401."""

    exit_code = 6
    http_status = 401


class Forbidden(PkiqError):
    """A known token whose role or CAs do not allow this: 403, saying what is missing."""

    exit_code = 4
    http_status = 403


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(session: Session, name: str, role: str, cas: list[str] | None, *,
           created_by: str, now: dt.datetime, days: int | None = None
           ) -> tuple[ApiToken, str]:
    """The row and the secret (the only time it exists outside its holder)."""
    if not _NAME.match(name):
        raise BadInput(f"token name {name!r}: letters, digits and . _ @ -, up to 64")
    if role not in ROLES:
        raise BadInput(f"role {role!r}: one of {', '.join(ROLES)}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} exists: revoke it or choose another name")
    if days is not None and not 1 <= days <= 3650:
        raise BadInput("--days is 1 to 3650")
    if cas is not None:
        from .authority import get_ca

        cas = sorted({get_ca(session, ca).name for ca in cas})
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, role=role, cas=cas, token_sha256=token_hash(secret),
                   prefix=secret[:12], created_at=now, created_by=created_by[:128],
                   expires_at=now + dt.timedelta(days=days) if days else None)
    session.add(row)
    session.flush()
    return row, secret


def authenticate(session: Session, presented: str | None, now: dt.datetime) -> ApiToken:
    """The token behind ``Authorization: Bearer ...``, or Unauthorized saying why. The
    comparison is of hashes, looked up by index: no timing tells how much of a guess was
    right."""
    if not presented:
        raise Unauthorized("this needs an API token: send Authorization: Bearer pkiq_... "
                           "(pkiq token create)")
    if not _SHAPE.match(presented):
        raise Unauthorized("that is not a pkiq API token (they look like pkiq_ and 43 "
                           "characters)")
    wanted = token_hash(presented)
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == wanted))
    if row is None or not hmac.compare_digest(row.token_sha256, wanted):
        raise Unauthorized("unknown API token")
    if row.revoked_at is not None:
        raise Unauthorized(f"API token {row.name!r} was revoked at "
                           f"{row.revoked_at:%Y-%m-%d %H:%M}Z")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized(f"API token {row.name!r} expired at "
                           f"{row.expires_at:%Y-%m-%d %H:%M}Z")
    return row


@dataclass(frozen=True)
class Grant:
    """What a token may do, read once per request (no row kept across requests)."""

    name: str
    role: str
    cas: tuple[str, ...] | None
    token_id: int

    @classmethod
    def of(cls, row: ApiToken) -> Grant:
        return cls(row.name, row.role, tuple(row.cas) if row.cas is not None else None,
                   row.id)

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def require(self, role: str, what: str) -> None:
        if not self.at_least(role):
            raise Forbidden(f"{what} needs the {role} role; token {self.name!r} is a "
                            f"{self.role}")

    def require_ca(self, ca_name: str, what: str) -> None:
        if self.cas is not None and ca_name not in self.cas:
            raise Forbidden(f"token {self.name!r} is limited to CA(s) "
                            f"{', '.join(self.cas)}: not {ca_name} ({what})")

    def sees_ca(self, ca_name: str) -> bool:
        return self.cas is None or ca_name in self.cas


def find(session: Session, ref: str) -> ApiToken:
    row = session.scalar(select(ApiToken).where(ApiToken.name == ref))
    if row is None and ref.startswith(PREFIX):
        row = session.scalar(select(ApiToken).where(ApiToken.prefix == ref[:12]))
    if row is None:
        raise NotFound(f"no API token {ref!r}")
    return row


def revoke(session: Session, ref: str, now: dt.datetime) -> ApiToken:
    row = find(session, ref)
    if row.revoked_at is not None:
        raise Conflict(f"token {row.name!r} was revoked already")
    row.revoked_at = now
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def view(row: ApiToken) -> dict:
    return {"name": row.name, "role": row.role, "cas": row.cas, "prefix": row.prefix,
            "created_at": row.created_at.isoformat(), "created_by": row.created_by,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}
