"""Problems from ``upkeep`` as alerts on the configured channels (``PKIQ_WEBHOOK_URL``,
``PKIQ_SMTP_*``). With no channel configured, problems still reach the log and
``pkiq crl status``."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from .alerts import Alert, channels_from_config, deliver

log = logging.getLogger("pkiq.alerts")


def sender(config: dict, clock: Callable[[], dt.datetime]) -> Callable[[object, str], list[str]]:
    """``send(problem, severity)`` for ``upkeep.notify``; raises BadInput now, not at
    3 a.m., when the channel settings are wrong."""
    channels = channels_from_config(config)

    def send(problem, severity: str) -> list[str]:
        alert = Alert(key=problem.key, severity=severity, summary=problem.summary,
                      details=getattr(problem, "details", {}) or {}, raised_at=clock())
        log.log(logging.INFO if severity == "resolved" else logging.WARNING,
                "alert %s: %s", severity, problem.summary)
        return deliver(alert, channels) if channels else []

    return send


def undeliverable(reason: str) -> Callable[[object, str], list[str]]:
    """A ``send`` for when the channels cannot be built: every alert is logged and recorded
    as undelivered with ``reason``, so ``pkiq crl status`` and the log still show it."""

    def send(problem, severity: str) -> list[str]:
        log.warning("alert %s (not delivered: %s): %s", severity, reason, problem.summary)
        return [reason]

    return send
