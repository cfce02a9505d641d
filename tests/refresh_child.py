"""Work done in a process of its own, so that a test measures real memory: the process's
peak RSS (``VmHWM``, which starts afresh at exec) before and after, not a traced estimate.

    python -m tests.refresh_child prepare SPEC.json   the database for ``refresh``, made here
    python -m tests.refresh_child refresh SPEC.json   one CRL refresh (spec: below)
    python -m tests.refresh_child decode FILE         ca.crl_decode.decode_crls on a file
    python -m tests.refresh_child fetch-decode URL    fetch one URL and decode what it sent

Prints one JSON line. The refresh spec: ``database`` (a SQLite file, or a database URL),
``now`` (ISO time: the clock), ``trusted`` (CA PEMs), ``urls``, ``settings`` (``crl
settings`` names; the defaults otherwise), ``prepared`` (true: ``prepare`` made the database
in a process of its own, so that the refresh's process starts as a nightly run does, without
Alembic and the set-up in it).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path


def vm_hwm() -> int:
    """This process's peak RSS in bytes since its exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _database_url(spec: dict) -> str:
    database = spec["database"]
    return database if "://" in database else f"sqlite:///{database}"


def prepare(spec_file: str) -> dict:
    from shell.db import make_engine, migrate, session_factory

    spec = json.loads(Path(spec_file).read_text())
    engine = make_engine(_database_url(spec))
    migrate(engine)
    _set_up(session_factory(engine), spec)
    engine.dispose()
    return {"prepared": spec["database"]}


def _set_up(sessions, spec: dict) -> None:
    from ca import crl_config, trust
    from shell.db import transaction

    now = dt.datetime.fromisoformat(spec["now"])
    with transaction(sessions) as session:
        for pem in spec.get("trusted", []):
            trust.add(session, pem.encode("ascii"), now)
        if spec.get("settings"):
            crl_config.update_settings(session, now, **spec["settings"])
        crl_config.add_points(session, spec["urls"], now)


def refresh(spec_file: str) -> dict:
    from scheduler.refresh import refresh as run_refresh
    from shell.db import make_engine, migrate, session_factory

    spec = json.loads(Path(spec_file).read_text())
    now = dt.datetime.fromisoformat(spec["now"])
    engine = make_engine(_database_url(spec))
    migrate(engine)  # prepared: only the one-row check that the schema is there
    sessions = session_factory(engine)
    if not spec.get("prepared"):
        _set_up(sessions, spec)
    before = vm_hwm()
    started = time.perf_counter()
    report = run_refresh(sessions, lambda: now, trigger="manual")
    seconds = time.perf_counter() - started
    peak = vm_hwm()
    engine.dispose()
    return {"rss_before": before, "rss_peak": peak, "seconds": seconds,
            "points": [p.as_dict() for p in report.points]}


def decode(path: str) -> dict:
    from ca.crl_decode import CrlFormatError, decode_crls

    data = Path(path).read_bytes()  # as an upload gives it; the refresh gives a spool
    before = vm_hwm()
    try:
        crls, _notes = decode_crls(data)
        outcome = f"{len(crls)} CRLs"
    except CrlFormatError as exc:
        outcome = str(exc)
    return {"rss_before": before, "rss_peak": vm_hwm(), "outcome": outcome}


def fetch_decode(url: str) -> dict:
    """What the refresh does with a body before the database sees it, alone."""
    from ca.crl_decode import decode_crls
    from scheduler.fetch import Fetcher, Validator

    before = vm_hwm()
    with Fetcher([(url, Validator())]) as fetcher:
        [result] = list(fetcher)
        crls, _notes = decode_crls(result.content.source())
        entries = len(crls[0].crl)
        result.close()
    return {"rss_before": before, "rss_peak": vm_hwm(), "entries": entries,
            "bytes": result.bytes_received}


if __name__ == "__main__":
    action, argument = sys.argv[1], sys.argv[2]
    print(json.dumps({"prepare": prepare, "refresh": refresh, "decode": decode,
                      "fetch-decode": fetch_decode}[action](argument)))
