"""Part (b)'s measured process: one refresh of the big CRL's distribution point, in a
process that imports only what ``pkiq crl refresh`` does. Run by ``bench.bench_crl``; kept
apart from it because the benchmark's own modules (the signing bench, the CA code) added
8-9 MiB to the whole-process peak that issue 10's goal (DER size + 100 MB) is read on.

    python -m bench.crl_child URL DATABASE_URL CA_PEM RESULT_JSON [PROFILE_OUT]
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

PHASES = ("fetch", "decode_crls", "verify_signature", "check_entry_extensions", "check",
          "install")


def rusage_cpu(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def vm_hwm_bytes() -> int:
    """This process's peak RSS since its exec (``ru_maxrss`` would include the RSS of the
    process it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def big_child(url: str, database_url: str, ca_pem: Path, result: Path,
              profile_to: Path | None) -> int:
    """In a fresh process, on the database ``big_setup`` made: one refresh of one
    distribution point, timed; a breakdown by wrapping the stages the refresh calls."""
    from ca import crl_install
    from scheduler import refresh as refresh_module
    from shell.db import make_engine, migrate, session_factory

    engine = make_engine(database_url)
    migrate(engine)  # a check only: the schema is there
    sessions = session_factory(engine)
    spent = dict.fromkeys(PHASES, 0.0)

    def timed(name, function):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper

    # Fetching runs in threads while results are applied: "fetch" is the time the refresh
    # waited for the next result.
    refresh_module.Fetcher.next = timed("fetch", refresh_module.Fetcher.next)
    refresh_module.decode_crls = timed("decode_crls", refresh_module.decode_crls)
    crl_install.verify_signature = timed("verify_signature", crl_install.verify_signature)
    crl_install._check_entry_extensions = timed("check_entry_extensions",
                                                crl_install._check_entry_extensions)
    crl_install.check = timed("check", crl_install.check)
    crl_install.install = timed("install", crl_install.install)
    rss_before = vm_hwm_bytes()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if profile_to is not None:
        import cProfile

        profile = cProfile.Profile()
        report = profile.runcall(refresh_module.refresh, sessions, now_utc, trigger="manual")
        profile.dump_stats(profile_to)
    else:
        report = refresh_module.refresh(sessions, now_utc, trigger="manual")
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    engine.dispose()
    crls = report.points[0].crls if report.points else []
    result.write_text(json.dumps({
        "refresh_seconds": seconds, "refresh_cpu_seconds": rusage_cpu(cpu1) - rusage_cpu(cpu0),
        "rss_before_bytes": rss_before,
        "rss_peak_bytes": vm_hwm_bytes(),
        "summary": report.summary(), "crls": crls, "phases": spent,
        "bytes_received": report.points[0].bytes_received if report.points else 0}))
    return 0



if __name__ == "__main__":
    sys.exit(big_child(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]),
                       Path(sys.argv[5]) if len(sys.argv) > 5 else None))
