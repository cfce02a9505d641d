"""Work done in a process of its own, so that a test measures real memory: the process's
peak RSS (``VmHWM``, which starts afresh at exec) before and after, not a traced estimate.

    python -m tests.refresh_child refresh SPEC.json   one CRL refresh (spec: below)
    python -m tests.refresh_child decode FILE         ca.crl_decode.decode_crls on a file

Prints one JSON line. The refresh spec: ``database`` (a SQLite file, made here), ``now``
(ISO time: the clock), ``trusted`` (CA PEMs), ``urls``, ``settings`` (``crl settings``
names; the defaults otherwise).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path


def vm_hwm() -> int:
    """This process's peak RSS in bytes since its exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def refresh(spec_file: str) -> dict:
    from ca import crl_config, trust
    from scheduler.refresh import refresh as run_refresh
    from shell.db import make_engine, migrate, session_factory, transaction

    spec = json.loads(Path(spec_file).read_text())
    now = dt.datetime.fromisoformat(spec["now"])
    engine = make_engine(f"sqlite:///{spec['database']}")
    migrate(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        for pem in spec.get("trusted", []):
            trust.add(session, pem.encode("ascii"), now)
        if spec.get("settings"):
            crl_config.update_settings(session, now, **spec["settings"])
        crl_config.add_points(session, spec["urls"], now)
    before = vm_hwm()
    report = run_refresh(sessions, lambda: now, trigger="manual")
    peak = vm_hwm()
    engine.dispose()
    return {"rss_before": before, "rss_peak": peak,
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


if __name__ == "__main__":
    action, argument = sys.argv[1], sys.argv[2]
    print(json.dumps({"refresh": refresh, "decode": decode}[action](argument)))
