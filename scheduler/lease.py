"""Leases: a named lock with an expiry, taken with one conditional UPDATE, so two beats, two
workers or a manual run on another host never run the same work at once, and a holder
that dies frees it when the lease expires (no lock is left behind)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from ca.sql import insert_or_ignore

from .models import Lease


def holder_id() -> str:
    """Host, process and a token: two threads of one process are two holders too."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def acquire(session: Session, name: str, holder: str, now: dt.datetime,
            ttl: dt.timedelta) -> bool:
    """Take the lease if it is free or expired (or already ours); commit right after."""
    insert_or_ignore(session, Lease, dict(name=name, holder=None, expires_at=None))
    taken = session.execute(
        update(Lease).where(Lease.name == name,
                            or_(Lease.holder.is_(None), Lease.expires_at <= now,
                                Lease.holder == holder))
        .values(holder=holder, expires_at=now + ttl))
    return taken.rowcount == 1


def renew(session: Session, name: str, holder: str, now: dt.datetime,
          ttl: dt.timedelta) -> bool:
    """Extend a lease we hold; False when it was lost (expired and taken by another)."""
    kept = session.execute(update(Lease).where(Lease.name == name, Lease.holder == holder)
                           .values(expires_at=now + ttl))
    return kept.rowcount == 1


def release(session: Session, name: str, holder: str) -> None:
    session.execute(update(Lease).where(Lease.name == name, Lease.holder == holder)
                    .values(holder=None, expires_at=None))


def current_holder(session: Session, name: str, now: dt.datetime) -> Lease | None:
    lease = session.get(Lease, name)
    if lease is None or lease.holder is None or lease.expires_at <= now:
        return None
    return lease
