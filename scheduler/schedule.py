"""When the nightly refresh is due: pure functions of the settings, the last run and an
injected clock, so due time, missed runs and changed times are tested without waiting."""

from __future__ import annotations

import datetime as dt
import hashlib


def spread_offset(spread_seconds: int, seed: str) -> dt.timedelta:
    """A fixed delay in [0, spread) for this installation, so every site configured for
    02:00 does not hit the CA's web server in the same second, yet each site keeps its time
    from night to night."""
    if spread_seconds <= 0:
        return dt.timedelta(0)
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return dt.timedelta(seconds=digest % spread_seconds)


def last_slot(update_time: str, now: dt.datetime, offset: dt.timedelta = dt.timedelta(0)
              ) -> dt.datetime:
    """The most recent scheduled instant at or before ``now`` (UTC)."""
    hour, minute = (int(part) for part in update_time.split(":"))
    slot = now.astimezone(dt.UTC).replace(hour=hour, minute=minute, second=0,
                                          microsecond=0) + offset
    while slot > now:
        slot -= dt.timedelta(days=1)
    return slot


def next_slot(update_time: str, now: dt.datetime, offset: dt.timedelta = dt.timedelta(0)
              ) -> dt.datetime:
    return last_slot(update_time, now, offset) + dt.timedelta(days=1)


def due(update_time: str, now: dt.datetime, last_scheduled_run: dt.datetime | None,
        offset: dt.timedelta = dt.timedelta(0)) -> dt.datetime | None:
    """The slot to run for now, or None. A slot is owed until a scheduled run has started
    at or after it, so a host that was down at that time runs at start ("missed"); a
    fresh installation with no run at all owes only today's slot, once."""
    slot = last_slot(update_time, now, offset)
    if last_scheduled_run is not None and last_scheduled_run >= slot:
        return None
    return slot


# What beat runs for the CRL updater, registered by the Celery app (worker.celery_app). The
# task is named, not imported: the pipeline knows nothing of Celery. Each tick decides from
# the database (the daily time, the overlap of pkiq's CRLs, open alerts), so a change of
# schedule needs no beat restart.
CRL_TICK_TASK = "pkiq.crl.tick"
# The stores tick: every node whose store is due (its inputs changed, it was asked for, or a
# failed attempt's retry time came) is published, one node at a time.
STORES_TICK_TASK = "pkiq.stores.tick"
# REST pushes: a rollout's next step (sent by whoever starts or resumes one, and by the
# rollouts tick for a retry whose time came or a step a dead worker left), and the drift
# check of every node with REST settings.
ROLLOUT_TASK = "pkiq.rollout.advance"
ROLLOUTS_TICK_TASK = "pkiq.rollouts.tick"
DRIFT_TASK = "pkiq.drift.check"


def beat_entries(tick_seconds: float, stores_seconds: float | None = None,
                 drift_seconds: float | None = None) -> dict[str, dict]:
    entries = {"crl-tick": {"task": CRL_TICK_TASK, "schedule": float(tick_seconds)}}
    if stores_seconds is not None:
        entries["stores-tick"] = {"task": STORES_TICK_TASK, "schedule": float(stores_seconds)}
        entries["rollouts-tick"] = {"task": ROLLOUTS_TICK_TASK,
                                    "schedule": float(stores_seconds)}
    if drift_seconds is not None:
        entries["drift-check"] = {"task": DRIFT_TASK, "schedule": float(drift_seconds)}
    return entries
