"""``pkiq web`` under cProfile in every thread, for ``bench.bench_api --profile``.

    python -m bench.api_profiled HOST PORT STATS_PATH

Serves the same app as ``pkiq web`` (``web.server.run`` over the context
``pkiq.cli_common.make_context`` makes from PKIQ_*), with a cProfile profiler in the main
thread (the event loop) and one in each thread the app starts (the thread pool that runs
the synchronous endpoints: cProfile in Python 3.11 sees one thread only). On SIGTERM the
server stops and the merged statistics go to STATS_PATH (``pstats`` format).

``report`` reads them back: milliseconds per job by stage (cumulative time of the functions
that make up a submission) and the functions with the most own time."""

from __future__ import annotations

import cProfile
import pstats
import signal
import sys
import threading
from pathlib import Path

PROFILES: list[cProfile.Profile] = []
_LOCK = threading.Lock()

# stage -> (file suffix, function name): cumulative time of that function per job. A
# submission's path (web.api): the shortcut hands the body to ``submit_parsed``, which waits
# for its batch; the batch is checked in the event loop's thread (``SubmitBatcher._prepare``)
# and written in the thread pool (``queue_requests``); the workers are told from the pool.
STAGES = {
    "a submission's own request (web.api submit_parsed)": ("web/api.py", "submit_parsed"),
    "token look-ups (service.tokens.authenticate)": ("service/tokens.py", "authenticate"),
    "checks, event loop (ca.jobs.prepare_requests: parse, verify, check)": (
        "ca/jobs.py", "prepare_requests"),
    "writes, thread pool (service.jobs.queue_requests)": ("service/jobs.py", "queue_requests"),
    "  ca.jobs.submit_many (insert)": ("ca/jobs.py", "submit_many"),
    "  audit rows (ca.audit.record_many)": ("ca/audit.py", "record_many"),
    "  commits (Session.commit)": ("sqlalchemy/orm/session.py", "commit"),
    "announce to the workers, thread pool (Celery publish)": ("service/jobs.py", "announce"),
    "response model validation (not on submit)": ("fastapi/routing.py", "serialize_response"),
    "event loop: uvicorn, the shortcut, the checks (main thread, total)": ("",
                                                                          "<main thread>"),
}


def _start_in_thread(*_args) -> None:
    profile = cProfile.Profile()
    with _LOCK:
        PROFILES.append(profile)
    sys.setprofile(None)
    profile.enable()


def main() -> None:
    host, port, stats_path = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    from pkiq.cli_common import make_context
    from web.server import run

    # uvicorn re-raises the SIGTERM it caught once it has stopped (the default action would
    # end the process before the statistics are written): let that re-raise do nothing
    signal.signal(signal.SIGTERM, lambda *_: None)
    threading.setprofile(_start_in_thread)
    main_profile = cProfile.Profile()
    ctx = make_context()
    main_profile.enable()
    try:
        run(ctx, host, port)
    finally:
        main_profile.disable()
        main_profile.dump_stats(str(stats_path) + ".main")
        stats = pstats.Stats(main_profile)
        for profile in PROFILES:
            try:
                profile.create_stats()
                stats.add(profile)
            except Exception:  # noqa: BLE001 - a profiler of a thread still running
                continue
        stats.dump_stats(str(stats_path))


def report(stats_path: Path, jobs: int) -> dict:
    stats = pstats.Stats(str(stats_path))
    main_stats = pstats.Stats(str(stats_path) + ".main")
    main_total = main_stats.total_tt
    table = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    stages = {}
    for label, (suffix, name) in STAGES.items():
        if name == "<main thread>":
            stages[label] = round(1000 * main_total / jobs, 3)
            continue
        cumulative = sum(ct for (file, _line, func), (_cc, _nc, _tt, ct, _callers)
                         in table.items() if func == name and file.endswith(suffix))
        stages[label] = round(1000 * cumulative / jobs, 3)
    own = sorted(((f"{Path(file).parent.name}/{Path(file).name}:{line} {func}", tt)
                  for (file, line, func), (_cc, _nc, tt, _ct, _callers) in table.items()),
                 key=lambda item: -item[1])
    return {"stages_ms_per_job": stages,
            "top_own_ms_per_job": [[name, round(1000 * tt / jobs, 3)] for name, tt in own[:30]],
            "total_profiled_ms_per_job": round(1000 * stats.total_tt / jobs, 3)}


if __name__ == "__main__":
    main()
