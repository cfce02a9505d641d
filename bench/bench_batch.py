"""The workers' batch path in one process: CPU per job of ``service.jobs.sign_batch``.

A worker signs the jobs a message names (up to ``JOBS_PER_MESSAGE``) with
``service.jobs.sign_batch``: claimed in one transaction, signed holding none, recorded in
another. This measures that path alone, without Celery, the broker or a
submitter running beside it: ``--jobs`` requests are queued (untimed), then signed
``JOBS_PER_MESSAGE`` to a batch, and the process's CPU time (``time.process_time``)
and wall time are divided by the jobs. Beside it, in the same run, the raw sign rate of a
key of the CA's type through ``cryptography`` (the library pkiq signs with), so the
non-signing part is the difference. One configuration per line: SQLite and (with
``--postgres``) PostgreSQL, a P-256 and an RSA-4096 CA, random and sequential serials.

Run through ``bench/run batch`` (``--quick``: fewer jobs); JSON in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_sign import (
    DEFAULT_POSTGRES_URL,
    PASSPHRASE,
    RESULTS_DIR,
    Backend,
    loadavg,
    log,
    machine_facts,
    make_csrs,
    make_request_keys,
    pyca_sign_rate,
)
from ca import authority, jobs
from ca.authority import CaOptions
from ca.names import parse_name
from service.jobs import sign_batch
from shell.db import session_factory, transaction
from worker.celery_app import JOBS_PER_MESSAGE

KEY_TYPES = ("ec-p256", "rsa4096")
SERIAL_MODES = ("random", "sequential")


def run_config(backend: Backend, workdir: Path, key_type: str, serial_mode: str,
               csrs: list[bytes]) -> dict:
    label = f"{backend.name}-{key_type}-{serial_mode}"
    with backend.database(workdir, label.replace("ec-", "")) as engine:
        factory = session_factory(engine)
        now = dt.datetime.now(dt.UTC)
        with transaction(factory) as session:
            ca, _notes = authority.create_ca(
                session, name="Batch", subject=parse_name(
                    f"/C=GB/O=Example Ltd/CN=pkiq batch benchmark {key_type} CA"),
                key_type=key_type, passphrase=PASSPHRASE, now=now,
                options=CaOptions(serial_mode=serial_mode))
            signer = authority.load_signer(ca, PASSPHRASE)
        with transaction(factory) as session:
            ids = [done.job.id for done in jobs.submit_many(
                session, authority.get_ca(session, "Batch"), csrs, profile="webserver",
                requester="bench", now=now)]
        clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, len(ids), JOBS_PER_MESSAGE):
            done = sign_batch(factory, ids[start:start + JOBS_PER_MESSAGE],
                              lambda _ca: signer, clock)
            failed = [job.error for job in done if job.state != "issued"]
            if failed:
                raise RuntimeError(f"{label}: a job failed: {failed[0]}")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    raw = pyca_sign_rate(signer.private_key, 2.0)  # the CA's own key, through cryptography
    return {"backend": backend.name, "key_type": key_type, "serial_mode": serial_mode,
            "jobs": len(ids), "cpu_ms_per_job": round(cpu / len(ids) * 1e3, 3),
            "wall_ms_per_job": round(wall / len(ids) * 1e3, 3),
            "raw_sign_ms": round(1e3 / raw, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, help="jobs per configuration (default 1000; "
                        "--quick: 200)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--key-types", default=",".join(KEY_TYPES))
    parser.add_argument("--serial-modes", default=",".join(SERIAL_MODES))
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # bench/run passes every benchmark the same arguments
        log(f"bench_batch: ignoring options meant for other benchmarks: {' '.join(unknown)}")
    count = args.jobs or (200 if args.quick else 1000)
    backends = [Backend("sqlite")] + ([Backend("postgresql", args.postgres_url)]
                                      if args.postgres else [])
    started = dt.datetime.now(dt.UTC)
    report = {"benchmark": "batch", "started_at": f"{started:%Y-%m-%dT%H:%M:%SZ}",
              "machine": machine_facts(), "loadavg_start": loadavg(),
              "jobs_per_transaction": JOBS_PER_MESSAGE, "runs": []}
    csrs = make_csrs(count, make_request_keys("ec-p256", 4))
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-batch-") as tmp:
        for backend in backends:
            for key_type in args.key_types.split(","):
                for mode in args.serial_modes.split(","):
                    log(f"{backend.name}, {key_type} CA, {mode} serials: {count} jobs ...")
                    report["runs"].append(run_config(backend, Path(tmp), key_type, mode,
                                                     csrs))
    report["loadavg_end"] = loadavg()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"batch-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"service.jobs.sign_batch in one process, {JOBS_PER_MESSAGE} jobs a batch - "
          f"{report['started_at']}, commit {report['machine'].get('git_commit', '?')}, load "
          f"{report['loadavg_start']} -> {report['loadavg_end']}")
    print(f"{'database':<11} {'CA key':<8} {'serials':<11} {'jobs':>5} {'CPU ms/job':>10} "
          f"{'wall ms/job':>11} {'raw sign ms':>11} {'other ms':>8}")
    for run in report["runs"]:
        print(f"{run['backend']:<11} {run['key_type']:<8} {run['serial_mode']:<11} "
              f"{run['jobs']:>5} {run['cpu_ms_per_job']:>10.3f} {run['wall_ms_per_job']:>11.3f} "
              f"{run['raw_sign_ms']:>11.3f} {run['cpu_ms_per_job'] - run['raw_sign_ms']:>8.3f}")
    print("raw sign ms: one signature with the CA's key through cryptography, same run; other "
          "ms: CPU per job that is not the signature")
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
