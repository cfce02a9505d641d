"""Whether this process can do its work: the database answers and the queue is reachable
(``/readyz``; ``/healthz`` only says the process is up)."""

from __future__ import annotations

import os

from sqlalchemy import text

from .context import ServiceContext

BROKER_TIMEOUT = 2.0


def readiness(ctx: ServiceContext) -> list[str]:
    """What is not ready, in words; empty when all is."""
    problems = []
    try:
        with ctx.read_transaction() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready, said in one line
        problems.append(f"database: {str(exc).splitlines()[0][:200]}")
    broker = ctx.settings.effective_broker_url
    if broker.startswith("filesystem"):
        # made on the first announcement (worker.celery_app.prepare) if not there yet
        folder = ctx.settings.queue_dir / "messages"
        nearest = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if nearest is None or not os.access(nearest, os.W_OK | os.X_OK):
            problems.append(f"queue: the embedded queue folder {folder} cannot be written")
    else:
        try:
            import redis

            client = redis.Redis.from_url(broker, socket_timeout=BROKER_TIMEOUT,
                                          socket_connect_timeout=BROKER_TIMEOUT)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - as above
            problems.append(f"queue: {type(exc).__name__}: {str(exc)[:200]}")
    return problems
