"""The audit log: who changed what, when, from where and with which data, written in the
transaction that makes the change, and chained: each row holds the SHA-256 of its own
content and its predecessor's hash, so a row edited, inserted or deleted afterwards shows
up in ``verify``.

Appends take turns on one head row (``audit_head``, locked FOR UPDATE), so two
transactions never link to the same predecessor, on one host or many. Callers record at the
end of their transaction: the head is the last lock taken, so no lock cycle forms with the
rows the change itself locked.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import socket
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from .models import AuditEntry, AuditHead

GENESIS = "0" * 64
MAX_VALUE = 4000  # characters of one value in ``data``: a request's data, not a file


@dataclass(frozen=True)
class Actor:
    """Who is acting: a token's name through the API, the OS user of a command, a worker."""

    name: str
    via: str  # cli | api | worker | beat | web
    source: str | None = None  # the client's address, or the host

    @classmethod
    def command_line(cls) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a container)
            import os

            user = f"uid {os.getuid()}"
        return cls(user, "cli", socket.gethostname())

    @classmethod
    def worker(cls, via: str = "worker") -> Actor:
        return cls(f"pkiq {via}", via, socket.gethostname())


def _bounded(value):
    """The data as JSON keeps it, long strings cut (an audit row is evidence, not a copy
    of every upload)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE else value[:MAX_VALUE] + "..."
    if isinstance(value, dict):
        return {str(k): _bounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def _content(entry_id: int, at: dt.datetime, actor: str, via: str, source: str | None,
             action: str, target: str | None, data: dict, prev_hash: str) -> bytes:
    document = {"id": entry_id, "at": at.astimezone(dt.UTC).isoformat(), "actor": actor,
                "via": via, "source": source, "action": action, "target": target,
                "data": data, "prev": prev_hash}
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def digest(entry: AuditEntry) -> str:
    return hashlib.sha256(_content(entry.id, entry.at, entry.actor, entry.via, entry.source,
                                   entry.action, entry.target, entry.data or {},
                                   entry.prev_hash)).hexdigest()


def record(session: Session, actor: Actor, action: str, target: str | None,
           data: dict | None, now: dt.datetime) -> None:
    """Append one row in the caller's transaction (it commits or rolls back with the
    change it records)."""
    record_many(session, actor, [(action, target, data)], now)


def record_many(session: Session, actor: Actor,
                items: list[tuple[str, str | None, dict | None]], now: dt.datetime) -> None:
    """Several rows under one turn of the head lock (a batch of submissions or signatures).
    Core statements throughout (read the head, write the rows, move the head): the ORM's
    unit of work cost three times as much as the hashes for a batch of one."""
    if not items:
        return
    session.flush()  # the caller's changes first, then the head: the lock order as always
    conn = session.connection()
    found = conn.execute(_READ_HEAD).one_or_none()
    if found is None:
        raise RuntimeError("the audit log has no head row: run pkiq db upgrade")
    last_id, last_hash = found
    at = now.astimezone(dt.UTC)
    source = actor.source[:255] if actor.source else None
    name = actor.name[:128]
    rows = []
    for action, target, data in items:
        row = dict(id=last_id + 1, at=at, actor=name, via=actor.via, source=source,
                   action=action, target=target and target[:300], data=_bounded(data or {}),
                   prev_hash=last_hash)
        row["hash"] = hashlib.sha256(_content(
            row["id"], at, name, actor.via, source, action, row["target"], row["data"],
            row["prev_hash"])).hexdigest()
        last_id, last_hash = row["id"], row["hash"]
        rows.append(row)
    conn.execute(_APPEND, rows)
    conn.execute(_MOVE_HEAD, {"new_id": last_id, "new_hash": last_hash})


# built once: making a statement costs more than running it
_HEAD = AuditHead.__table__
_READ_HEAD = select(_HEAD.c.last_id, _HEAD.c.last_hash).where(_HEAD.c.id == 1).with_for_update()
_APPEND = insert(AuditEntry.__table__)
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(last_id=bindparam("new_id"),
                                                         last_hash=bindparam("new_hash"))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    broken_at: int | None = None
    reason: str | None = None

    def view(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "broken_at": self.broken_at,
                "reason": self.reason}


def verify(session: Session, batch: int = 5000) -> Verdict:
    """Walk the chain from the first row: ids without gaps, each row's hash its content's,
    each row's predecessor the previous row's hash, the head the last row."""
    prev, expected_id, checked = GENESIS, 1, 0
    last_id = 0
    while True:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.id >= expected_id)
                               .order_by(AuditEntry.id).limit(batch)).all()
        if not rows:
            break
        for row in rows:
            if row.id != expected_id:
                return Verdict(False, checked, expected_id,
                               f"row {expected_id} is missing (the next is {row.id})")
            if row.prev_hash != prev:
                return Verdict(False, checked, row.id,
                               f"row {row.id} does not follow row {row.id - 1} (its "
                               "predecessor's hash differs: a row before it was changed, "
                               "removed or inserted)")
            if digest(row) != row.hash:
                return Verdict(False, checked, row.id,
                               f"row {row.id} was changed after it was written (its content "
                               "no longer matches its hash)")
            prev, expected_id, checked, last_id = row.hash, row.id + 1, checked + 1, row.id
    head = session.get(AuditHead, 1)
    if head is not None and (head.last_id != last_id or head.last_hash != prev):
        return Verdict(False, checked, last_id + 1,
                       f"the chain ends at row {last_id} but its head says row "
                       f"{head.last_id}: rows at the end were removed")
    return Verdict(True, checked)


def entries(session: Session, *, action: str | None = None, target: str | None = None,
            actor: str | None = None, after: int | None = None, limit: int = 100
            ) -> list[AuditEntry]:
    """Newest first, or oldest first after ``after`` (paging forward)."""
    query = select(AuditEntry)
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if target:
        query = query.where(AuditEntry.target == target)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if after is not None:
        query = query.where(AuditEntry.id > min(after, 2**31 - 1)).order_by(AuditEntry.id)
    else:
        query = query.order_by(AuditEntry.id.desc())
    return list(session.scalars(query.limit(max(1, min(limit, 1000)))))


def view(entry: AuditEntry) -> dict:
    return {"id": entry.id, "at": entry.at.isoformat(), "actor": entry.actor,
            "via": entry.via, "source": entry.source, "action": entry.action,
            "target": entry.target, "data": entry.data, "hash": entry.hash,
            "prev_hash": entry.prev_hash}
