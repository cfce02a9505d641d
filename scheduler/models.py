"""The CRL pipeline's own tables: leases between hosts, the refresh runs, open alerts.

They record when and by whom the scheduler did its work, not what the CA is, so they live
with the pipeline, on the domain's declarative ``Base`` (one schema, one set of Alembic
migrations; ``shell/migrations`` creates them like every other table).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ca.models import Base, UTCDateTime


class Lease(Base):
    """A named lock with an expiry, for work that must never run twice at once across
    processes and hosts (the CRL refresh); a holder that dies loses it when it expires."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class RefreshRun(Base):
    __tablename__ = "crl_refresh_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(12))  # schedule | missed | manual
    scheduled_for: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    holder: Mapped[str] = mapped_column(String(255))
    summary: Mapped[dict | None] = mapped_column(JSON)


class AlertState(Base):
    """One row per open problem, so an alert goes out once per problem, not once a tick."""

    __tablename__ = "alert_states"

    key: Mapped[str] = mapped_column(String(2100), primary_key=True)  # "dp:" + a URL
    severity: Mapped[str] = mapped_column(String(10))
    summary: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    notified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delivery_error: Mapped[str | None] = mapped_column(Text)
