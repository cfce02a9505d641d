"""Signing-queue benchmark: end-to-end certs/s from submit to issued, Redis and PostgreSQL.

Measures, in one run:

1. Throughput: for a P-256 CA and an RSA-4096 CA, with 1 and with 2 worker processes
   (``python -m pkiq worker -c 1 -n wK@%h`` each, as real separate processes): a fresh
   PostgreSQL schema, a fresh queue name on the machine's Redis, ``pkiq ca create``, then
   ``--count`` jobs submitted from this process through ``pkiq submit``'s own function
   (``service.jobs.queue_requests``: ``SUBMIT_CHUNK`` requests per transaction, then
   announced, ``JOBS_PER_MESSAGE`` job ids to a message). Throughput is N divided by
   (last ``finished_at`` - first ``submitted_at``), both read from the job rows.
2. Raw sign rates in the same run, before and after each CA key type's queue runs: the CA
   key type signing through ``cryptography`` (the library pkiq signs with) in one process
   and in two released together (the machine's raw 2-core rate: the yardstick the goals
   use), and ``openssl speed -seconds S -mr ALG`` in one process and with ``-multi 2`` as a
   second reference, converted to signatures per wall-clock second.
3. ``openssl ca -batch`` in a loop over the same CSRs, for a demoCA with an RSA-4096 and with
   a P-256 key whose index.txt holds 100 and 200,000 entries.
4. Latency at a light load: with 1 worker, jobs submitted one at a time at a fixed rate
   (default 20/s); ``finished_at - submitted_at`` from the rows, and the time until this
   process saw the job issued (polling every few ms).
5. With ``--serial-modes random,sequential``, each configuration again for a CA with
   sequential serials (what a demoCA import keeps), compared with the random-serial run.

Run through ``bench/run`` or ``python -m bench.bench_queue``; results go to ``bench/results/``
as JSON (``queue-<time>.json``, ``queue-latest.json``) and to stdout as a table. It always
uses PostgreSQL and Redis (``--postgres`` is accepted, for ``bench/run``, and changes nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import func, select

from bench.bench_sign import (
    DEFAULT_POSTGRES_URL,
    RESULTS_DIR,
    ROOT,
    SPEED_ALGORITHM,
    Backend,
    MachineCpu,
    latency_summary,
    loadavg,
    log,
    machine_facts,
    make_csrs,
    make_request_keys,
    openssl_democa,
    openssl_speed,
    postgres_facts,
    pyca_sign_rate,
    sign_counts,
    time_openssl_ca,
    write_requests,
)
from ca import jobs
from ca.authority import get_ca
from ca.models import CertificateAuthority, SigningJob
from ca.profiles import DEFAULT_PROFILE
from pkiq.cli_common import make_context
from service import ServiceContext
from service.jobs import SUBMIT_CHUNK, queue_requests
from service.jobs import announce as announce_jobs
from shell.settings import Settings
from worker.celery_app import JOBS_PER_MESSAGE

DEFAULT_REDIS_URL = os.environ.get(
    "PKIQ_BENCH_REDIS_URL", os.environ.get("PKIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
PASSPHRASE = "pkiq queue benchmark passphrase"
CA_NAME = "Bench"
CA_KEY_TYPES = ("ec-p256", "rsa4096")
KEY_LABEL = {"ec-p256": "P-256", "rsa4096": "RSA-4096"}
# 2 workers >= 60% of the CA key's sign rate through cryptography in two processes released
# together (the library pkiq signs with: the machine's physical limit), RSA-4096 and P-256;
# ``openssl speed -multi 2`` is printed beside it, in wall-clock sign/s.
RAW_GOAL = 0.60
LOOP_GOALS = {"small": 3.0, "large": 40.0}  # >= 3x the openssl ca loop at 100, >= 40x at 200k
SEQUENTIAL_GOAL = 0.90  # issue 14: sequential serials within 10% of random ones
OTHER_BENCHMARK = "bench.bench_sign"  # never share the 2 cores with it
REQUEST_KEYS = 4  # a few cached P-256 request keys: cheap proof-of-possession checks
WARMUP_JOBS = 24  # distinct CSRs for warming workers up (each worker signs at least one)
FINISHED = tuple(jobs.FINISHED)


# ---------------------------------------------------------------- machine

def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def wait_for_other_benchmarks(poll_seconds: int, limit_seconds: int) -> dict:
    """Wait while another benchmark (``pgrep -f bench.bench_sign``) runs, so the two never
    share the cores. Our own process and its parents (a shell) do not count."""
    start, seen = time.monotonic(), set()
    mine = _ancestors()
    while True:
        found = subprocess.run(["pgrep", "-f", OTHER_BENCHMARK], capture_output=True,
                               text=True).stdout.split()
        others = sorted(int(p) for p in found if int(p) not in mine)
        waited = round(time.monotonic() - start, 1)
        if not others:
            return {"pattern": OTHER_BENCHMARK, "waited_seconds": waited,
                    "pids_waited_for": sorted(seen)}
        seen.update(others)
        if waited >= limit_seconds:
            raise SystemExit(f"bench_queue: {OTHER_BENCHMARK} still running (pids {others}) "
                             f"after {waited:.0f}s; not measuring on a shared machine "
                             "(--no-wait overrides)")
        log(f"waiting for {OTHER_BENCHMARK} (pids {others}) to finish ...")
        time.sleep(poll_seconds)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_ticks() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (comm, process group, user+system ticks, start time) for every live process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        out[int(entry.name)] = (comm, int(fields[2]), int(fields[11]) + int(fields[12]),
                                int(fields[19]))
    return out


class ProcessCpu:
    """CPU seconds per group of processes over an interval (from /proc/PID/stat): where the
    cores went - the workers, this process (the submitter), PostgreSQL, Redis, the rest."""

    def __init__(self, worker_groups: list[int]):
        self.worker_groups = set(worker_groups)
        self.start = _process_ticks()

    def _group(self, pid: int, comm: str, pgrp: int) -> str:
        if pid == os.getpid():
            return "submitter"
        if pgrp in self.worker_groups:
            return "workers"
        if comm.startswith("postgres"):
            return "postgresql"
        if comm.startswith("redis"):
            return "redis"
        return "other"

    def seconds(self) -> dict:
        totals = dict.fromkeys(("workers", "submitter", "postgresql", "redis", "other"), 0.0)
        other: dict[str, float] = {}
        for pid, (comm, pgrp, ticks, started) in _process_ticks().items():
            before = self.start.get(pid)  # the same process: same pid and start time
            base = before[2] if before and before[3] == started else 0
            used = (ticks - base) / _CLK_TCK
            group = self._group(pid, comm, pgrp)
            totals[group] += used
            if group == "other" and used:
                other[comm] = other.get(comm, 0.0) + used
        out: dict = {k: round(v, 2) for k, v in totals.items()}
        out["other_by_name"] = {k: round(v, 2) for k, v in sorted(
            other.items(), key=lambda kv: -kv[1])[:8]}
        return out


# ---------------------------------------------------------------- raw sign rates

def openssl_speed_multi(key_type: str, seconds: int, processes: int) -> dict:
    """``openssl speed -seconds S -mr -multi P ALG``: the sum of P processes' sign/s as
    openssl prints it (per user CPU second) and over wall-clock seconds (``sign_counts``)."""
    cmd = ["openssl", "speed", "-seconds", str(seconds), "-mr", "-multi", str(processes),
           SPEED_ALGORITHM[key_type]]
    machine_cpu = MachineCpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    busy = machine_cpu.busy_percent()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("+F")]
    sign_per_s = None
    for line in lines:  # the parent's totals: +F2:k:bits:sign/s:verify/s (RSA), +F4 (ECDSA)
        fields = line.split(":")
        if fields[0] in ("+F2", "+F4"):
            sign_per_s = float(fields[3])
    counts = sign_counts(proc.stderr)
    if sign_per_s is None or len(counts) != processes:
        raise RuntimeError(f"could not read sign/s from {' '.join(cmd)}:\n{proc.stdout}")
    return {"command": " ".join(cmd), "sign_per_s": round(sign_per_s, 2),
            "sign_per_wall_s": round(sum(c for c, _t in counts) / seconds, 2),
            "machine_cpu_busy_percent": busy, "machine_readable": lines}


def _pyca_child(key_der: bytes, seconds: float, start, results) -> None:
    key = serialization.load_der_private_key(key_der, None)
    start.wait()  # both children loaded and warm: released together
    results.put(pyca_sign_rate(key, seconds))


def pyca_rates(key_type: str, seconds: int) -> dict:
    """The CA key's sign rate through ``cryptography`` (the library pkiq signs with, which
    links its own OpenSSL), in one process and in two released together (summed): the
    yardsticks the queue's throughput is judged against."""
    key = (rsa.generate_private_key(public_exponent=65537, key_size=4096)
           if key_type == "rsa4096" else ec.generate_private_key(ec.SECP256R1()))
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    one = pyca_sign_rate(key, seconds)
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(2), spawn.Queue()
    children = [spawn.Process(target=_pyca_child, args=(der, seconds, start, results))
                for _ in range(2)]
    for child in children:
        child.start()
    two = sum(results.get(timeout=120 + 4 * seconds) for _ in children)
    for child in children:
        child.join()
    return {"single": {"sign_per_s": one}, "multi2": {"sign_per_s": round(two, 2)}}


def raw_rates(key_type: str, seconds: int) -> dict:
    log(f"{key_type}: openssl speed {seconds}s, one process and -multi 2; the same through "
        "cryptography ...")
    one = openssl_speed(key_type, seconds)
    two = openssl_speed_multi(key_type, seconds, 2)
    pyca = pyca_rates(key_type, seconds)
    log(f"  {SPEED_ALGORITHM[key_type]}: {one['sign_per_wall_s']:.1f} sign/s one process, "
        f"{two['sign_per_wall_s']:.1f} sign/s -multi 2 (wall-clock); cryptography "
        f"{pyca['single']['sign_per_s']:.1f} / {pyca['multi2']['sign_per_s']:.1f} sign/s")
    return {"single": one, "multi2": two, "pyca": pyca}


# ---------------------------------------------------------------- workers

class Workers:
    """``python -m pkiq worker -c 1 -n wK@%h`` processes, each in a process group of its own
    (the Celery main process and its one pool child), logging to a file."""

    READY = re.compile(r"@\S+ ready\.")
    SUCCEEDED = re.compile(r"succeeded in ([0-9.eE+-]+)s")
    SIGNED = re.compile(r"jobs \S+: (\d+) issued, (\d+) failed")

    def __init__(self, env: dict, folder: Path, count: int):
        self.env, self.folder, self.count = env, folder, count
        self.procs: list[subprocess.Popen] = []
        self.logs = [folder / f"w{k}.log" for k in range(count)]

    def command(self, k: int) -> tuple[list[str], dict]:
        """Worker ``k``'s command line and environment."""
        return [sys.executable, "-m", "pkiq", "worker", "-c", "1", "-n", f"w{k}@%h"], self.env

    def start(self, timeout: float = 90) -> float:
        t0 = time.perf_counter()
        for k, path in enumerate(self.logs):
            argv, env = self.command(k)
            with open(path, "w") as out:
                self.procs.append(subprocess.Popen(
                    argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))
        deadline = time.monotonic() + timeout
        while not all(self.READY.search(p.read_text()) for p in self.logs):
            for proc, path in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited ({proc.returncode}):\n"
                                       f"{path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("workers not ready after "
                                   f"{timeout}s:\n{self.logs[0].read_text()[-3000:]}")
            time.sleep(0.1)
        return time.perf_counter() - t0

    @property
    def groups(self) -> list[int]:
        return [p.pid for p in self.procs]

    def mark(self) -> list[int]:
        return [p.stat().st_size for p in self.logs]

    def task_seconds(self, since: list[int] | None = None) -> list[list[float]]:
        """Per worker: Celery's "succeeded in X s" for each task after ``since`` (the time in
        the pool child from receiving the task to its transaction committed)."""
        out = []
        for k, path in enumerate(self.logs):
            with open(path, "rb") as f:
                f.seek(since[k] if since else 0)
                text_ = f.read().decode(errors="replace")
            out.append([float(m) for m in self.SUCCEEDED.findall(text_)])
        return out

    def jobs_done(self, since: list[int] | None = None) -> list[int]:
        """Per worker: jobs it issued or failed after ``since`` (its tasks' summary lines)."""
        out = []
        for k, path in enumerate(self.logs):
            with open(path, "rb") as f:
                f.seek(since[k] if since else 0)
                text_ = f.read().decode(errors="replace")
            out.append(sum(int(a) + int(b) for a, b in self.SIGNED.findall(text_)))
        return out

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ---------------------------------------------------------------- submitting

def submit_one(app: ServiceContext, csr: bytes, requester: str) -> int:
    """One request as ``pkiq submit`` handles a file: its own transaction, the CA looked up
    in it, ``ca.jobs.submit``, the job reported (``job_info``)."""
    with app.transaction() as session:
        done = jobs.submit(session, get_ca(session, CA_NAME), csr, profile=DEFAULT_PROFILE,
                           requester=requester, now=app.clock())
        info = jobs.job_info(done.job)
    if not done.created or info["state"] != "queued":
        raise RuntimeError(f"submit did not queue a new job: {info}")
    return info["id"]


def announce(app: ServiceContext, job_ids: list[int]) -> None:
    """``pkiq submit``'s own announcement (one pooled producer, ``JOBS_PER_MESSAGE`` ids to
    a message)."""
    warning = announce_jobs(app, job_ids)
    if warning:
        raise RuntimeError(warning)


def submit_chunk(app: ServiceContext, csrs: list[bytes], requester: str) -> list[int]:
    """One chunk of ``pkiq submit``, through its own function: the requests queued in one
    transaction, then announced."""
    rows, warning = queue_requests(app, CA_NAME, csrs, profile=DEFAULT_PROFILE,
                                   requester=requester)
    if warning:
        raise RuntimeError(warning)
    if any(not r.get("new") or r["state"] != "queued" for r in rows):
        raise RuntimeError(f"submit did not queue new jobs: {rows[:3]}")
    return [r["id"] for r in rows]


def finished_count(engine, requester: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(SigningJob).where(
            SigningJob.requester == requester, SigningJob.state.in_(FINISHED)))


def wait_finished(engine, requester: str, count: int, timeout: float,
                  poll: float = 0.25) -> float:
    """Wait until ``count`` jobs of ``requester`` have finished; the time.time() of the poll
    that first saw them all (a cross-check on the rows' timestamps)."""
    deadline = time.monotonic() + timeout
    while True:
        t_query = time.time()
        done = finished_count(engine, requester)
        if done >= count:
            return t_query
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {count} {requester} jobs finished after "
                               f"{timeout:.0f}s")
        time.sleep(poll)


def job_rows(engine, requester: str) -> list:
    with engine.connect() as conn:
        return conn.execute(select(
            SigningJob.id, SigningJob.state, SigningJob.attempts, SigningJob.serial,
            SigningJob.submitted_at, SigningJob.finished_at, SigningJob.error,
        ).where(SigningJob.requester == requester).order_by(SigningJob.id)).all()


def warm_up(app: ServiceContext, engine, workers: Workers, csrs: list[bytes]) -> int:
    """Untimed jobs until every worker has signed at least one: connections made, schema
    checked, CA key decrypted and cached, imports done."""
    used = 0
    per_round = 2 * workers.count
    while used + per_round <= len(csrs):
        for csr in csrs[used:used + per_round]:  # a message each, to reach every worker
            submit_chunk(app, [csr], "bench-warmup")
        used += per_round
        wait_finished(engine, "bench-warmup", used, timeout=120, poll=0.1)
        if all(workers.task_seconds()):
            return used
    raise RuntimeError(f"a worker signed nothing during {used} warm-up jobs")


# ---------------------------------------------------------------- 1. throughput

class Phase:
    """What is measured around one timed phase: CPU by process group, whole-machine CPU,
    load average, and where each worker's log stood."""

    def __init__(self, workers: Workers):
        self.workers = workers
        self.mark = workers.mark()
        self.process_cpu = ProcessCpu(workers.groups)
        self.machine_cpu = MachineCpu()
        self.load_start = loadavg()

    def finish(self, engine, requester: str, count: int, t_start: float) -> dict:
        """Job rows checked (all issued, distinct serials); rate over ``t_start`` (a
        time.time()) to the last ``finished_at``."""
        cpu = self.process_cpu.seconds()
        busy = self.machine_cpu.busy_percent()
        load_end = loadavg()
        rows = job_rows(engine, requester)
        states: dict[str, int] = {}
        for r in rows:
            states[r.state] = states.get(r.state, 0) + 1
        if states != {"issued": count}:
            bad = [dict(r._mapping) for r in rows if r.state != "issued"][:5]
            raise RuntimeError(f"not every {requester} job was issued: {states}; e.g. {bad}")
        last_finish = max(r.finished_at for r in rows)
        span = last_finish.timestamp() - t_start
        per_worker = self.workers.task_seconds(self.mark)
        jobs_per_worker = self.workers.jobs_done(self.mark)
        tasks = sorted(x for per in per_worker for x in per)
        return {
            "jobs": count, "states": states,
            "distinct_serials": len({r.serial for r in rows}),
            "redelivered_jobs": sum(1 for r in rows if r.attempts != 1),
            "last_finished_at": last_finish.isoformat(),
            "seconds": round(span, 3),
            "certs_per_s": round(count / span, 2),
            "jobs_per_worker": jobs_per_worker,
            "messages_per_worker": [len(per) for per in per_worker],
            "task_seconds": latency_summary(tasks) if tasks else None,  # per message
            "task_seconds_sum": round(sum(tasks), 3),
            "task_ms_per_job": round(sum(tasks) / count * 1e3, 3),
            # the share of the phase the pool children spent inside tasks (the rest: waiting
            # for a message, the ack, the hand-over from the Celery main process to its child)
            "pool_child_busy_fraction": round(sum(tasks) / (span * self.workers.count), 3),
            "process_cpu_seconds": cpu,
            "cpu_ms_per_job": {k: round(v / count * 1e3, 2) for k, v in cpu.items()
                               if isinstance(v, float)},
            "machine_cpu_busy_percent": busy,
            "loadavg_start": self.load_start, "loadavg_end": load_end,
        }, rows


def run_throughput(app: ServiceContext, engine, workers: Workers, csrs: list[bytes]) -> dict:
    """The requirement's measure: workers running, N jobs submitted as ``pkiq submit`` does;
    N / (last finished_at - first submitted_at)."""
    requester = "bench-throughput"
    log(f"  throughput: submitting {len(csrs)} jobs, {SUBMIT_CHUNK} per transaction, "
        f"{JOBS_PER_MESSAGE} per message ...")
    phase = Phase(workers)
    t_first = time.time()
    submit_cpu = time.process_time()
    for start in range(0, len(csrs), SUBMIT_CHUNK):
        submit_chunk(app, csrs[start:start + SUBMIT_CHUNK], requester)
    submit_cpu = time.process_time() - submit_cpu
    t_submitted = time.time()
    log(f"  throughput: submitted in {t_submitted - t_first:.1f}s "
        f"({len(csrs) / (t_submitted - t_first):.1f}/s); waiting for the workers ...")
    t_seen = wait_finished(engine, requester, len(csrs), timeout=120 + len(csrs) / 2)
    result, rows = phase.finish(engine, requester, len(csrs), t_first)
    first_row = min(r.submitted_at for r in rows)
    last_finish = max(r.finished_at for r in rows)
    span = (last_finish - first_row).total_seconds()  # the rows' own clock readings
    result.update({
        "first_submitted_at": first_row.isoformat(),
        "seconds": round(span, 3),
        "certs_per_s": round(len(csrs) / span, 2),
        "pool_child_busy_fraction": round(result["task_seconds_sum"] / (span * workers.count),
                                          3),
        "submit_seconds": round(t_submitted - t_first, 3),
        "submit_per_s": round(len(csrs) / (t_submitted - t_first), 2),
        "submit_cpu_ms_per_job": round(submit_cpu / len(csrs) * 1e3, 3),
        "drain_seconds_after_submit": round(last_finish.timestamp() - t_submitted, 3),
        "observed_all_finished_seconds": round(t_seen - t_first, 3),
        "observed_certs_per_s": round(len(csrs) / (t_seen - t_first), 2),
        "submit_to_finished_under_load": latency_summary(
            [(r.finished_at - r.submitted_at).total_seconds() for r in rows]),
    })
    log(f"  throughput: {result['certs_per_s']:.1f} certs/s ({len(csrs)} jobs in "
        f"{span:.1f}s; submit {result['submit_per_s']:.1f}/s; jobs per worker "
        f"{result['jobs_per_worker']}; cpu ms/job {result['cpu_ms_per_job']}; box "
        f"{result['machine_cpu_busy_percent']}%)")
    return result


def run_drain(app: ServiceContext, engine, workers: Workers, csrs: list[bytes]) -> dict:
    """Not the requirement's measure, a diagnosis: the jobs are written first with no message
    (the workers idle), then announced in one ``service.jobs.announce`` call;
    N / (last finished_at - first announce). What the workers reach when the submitter is
    not sharing the cores."""
    requester = "bench-drain"
    log(f"  drain: writing {len(csrs)} jobs unannounced ...")
    ids = []
    for start in range(0, len(csrs), SUBMIT_CHUNK):
        with app.transaction() as session:
            done = jobs.submit_many(session, get_ca(session, CA_NAME),
                                    csrs[start:start + SUBMIT_CHUNK], profile=DEFAULT_PROFILE,
                                    requester=requester, now=app.clock())
            ids += [d.job.id for d in done]
    phase = Phase(workers)
    t_first = time.time()
    announce(app, ids)
    t_announced = time.time()
    wait_finished(engine, requester, len(csrs), timeout=120 + len(csrs) / 2)
    result, _rows = phase.finish(engine, requester, len(csrs), t_first)
    result["announce_seconds"] = round(t_announced - t_first, 3)
    log(f"  drain: {result['certs_per_s']:.1f} certs/s ({len(csrs)} pre-queued jobs in "
        f"{result['seconds']:.1f}s; announce {result['announce_seconds']:.1f}s; cpu ms/job "
        f"{result['cpu_ms_per_job']})")
    return result


# ---------------------------------------------------------------- 4. latency

def run_latency(app: ServiceContext, engine, workers: Workers, csrs: list[bytes], rate: float,
                poll: float) -> dict:
    """Jobs submitted one at a time every 1/rate s (``pkiq submit one.csr``: submit, then
    announce); between submits this process polls for the jobs still pending."""
    requester = "bench-latency"
    log(f"  latency: {len(csrs)} jobs at {rate:g}/s, one at a time ...")
    mark = workers.mark()
    machine_cpu = MachineCpu()
    load_start = loadavg()
    interval = 1.0 / rate
    submitted: dict[int, float] = {}
    seen: dict[int, float] = {}
    pending: set[int] = set()
    submit_s: list[float] = []
    announce_s: list[float] = []
    start = time.perf_counter()
    deadline = time.monotonic() + len(csrs) * interval + 120
    nxt = 0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while nxt < len(csrs) or pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"latency: {len(pending)} jobs still pending")
            if nxt < len(csrs) and time.perf_counter() >= start + nxt * interval:
                t_submit = time.time()
                job_id = submit_one(app, csrs[nxt], requester)
                t_announce = time.time()
                announce(app, [job_id])
                submit_s.append(t_announce - t_submit)
                announce_s.append(time.time() - t_announce)
                submitted[job_id] = t_submit
                pending.add(job_id)
                nxt += 1
                continue
            if pending:
                t_query = time.time()  # a job seen finished committed before this moment
                done = conn.scalars(select(SigningJob.id).where(
                    SigningJob.id.in_(sorted(pending)), SigningJob.state.in_(FINISHED))).all()
                for job_id in done:
                    seen[job_id] = t_query
                    pending.discard(job_id)
            wake = min(time.perf_counter() + poll,
                       start + nxt * interval if nxt < len(csrs) else float("inf"))
            time.sleep(max(0.0, wake - time.perf_counter()))
    busy = machine_cpu.busy_percent()
    rows = job_rows(engine, requester)
    states = {r.state for r in rows}
    if states != {"issued"}:
        raise RuntimeError(f"latency: not every job was issued: {states}")
    rows_latency = [(r.finished_at - r.submitted_at).total_seconds() for r in rows]
    observed = [seen[r.id] - submitted[r.id] for r in rows]
    span = max(submitted.values()) - min(submitted.values())
    tasks = sorted(s for per in workers.task_seconds(mark) for s in per)
    result = {
        "jobs": len(rows), "target_rate_per_s": rate,
        "achieved_rate_per_s": round((len(rows) - 1) / span, 2) if span else None,
        "poll_seconds": poll,
        "rows_finished_minus_submitted": latency_summary(rows_latency),
        "observed_submit_to_issued": latency_summary(observed),
        "submit_call": latency_summary(submit_s),  # ca.jobs.submit and its commit
        "announce_call": latency_summary(announce_s),  # service.jobs.announce, one job
        "task_seconds": latency_summary(tasks) if tasks else None,
        "machine_cpu_busy_percent": busy,
        "loadavg_start": load_start, "loadavg_end": loadavg(),
    }
    log(f"  latency: rows p50 {result['rows_finished_minus_submitted']['p50_ms']:.1f} ms, "
        f"p99 {result['rows_finished_minus_submitted']['p99_ms']:.1f} ms; observed p50 "
        f"{result['observed_submit_to_issued']['p50_ms']:.1f} ms, p99 "
        f"{result['observed_submit_to_issued']['p99_ms']:.1f} ms")
    return result


# ---------------------------------------------------------------- one configuration

def estate_env(db_url: str, redis_url: str, queue: str, data_dir: Path) -> dict:
    """This process's environment without its PKIQ_*, pointed at one run's database, queue,
    data directory and the benchmark's passphrase: what the run's pkiq commands get."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKIQ_")}
    env.update(PKIQ_DATABASE_URL=db_url, PKIQ_BROKER_URL=redis_url, PKIQ_QUEUE=queue,
               PKIQ_CA_PASSPHRASE=PASSPHRASE, PKIQ_DATA_DIR=str(data_dir))
    return env


def create_ca(env: dict, key_type: str, what: str, serial_mode: str = "random") -> None:
    """``pkiq ca create`` of the run's CA, as an operator would."""
    created = subprocess.run(
        [sys.executable, "-m", "pkiq", "ca", "create", CA_NAME, "--subject",
         f"/C=GB/O=Example Ltd/CN=pkiq {what} CA", "--key-type", key_type,
         "--serial-mode", serial_mode], env=env, cwd=ROOT, capture_output=True, text=True)
    if created.returncode != 0:
        raise RuntimeError(f"pkiq ca create failed: {created.stderr}")


def run_config(args, key_type: str, worker_count: int, csrs: list[bytes],
               warmup_csrs: list[bytes], latency_csrs: list[bytes] | None,
               drain_csrs: list[bytes], workdir: Path, serial_mode: str = "random") -> dict:
    """A fresh schema, queue, CA and set of workers; warm-up, [latency,] throughput, drain."""
    label = f"{key_type}-{worker_count}w-{serial_mode}"
    folder = workdir / label
    folder.mkdir()
    queue = f"pkiq-bench-{secrets.token_hex(4)}"
    log(f"{KEY_LABEL[key_type]} CA ({serial_mode} serials), {worker_count} worker(s): schema, "
        f"queue {queue}, pkiq ca create ...")
    with Backend("postgresql", args.postgres_url).database(workdir, f"q-{label}") as engine:
        db_url = engine.url.render_as_string(hide_password=False)
        env = estate_env(db_url, args.redis_url, queue, folder / "data")
        create_ca(env, key_type, f"queue benchmark {KEY_LABEL[key_type]}", serial_mode)
        settings = Settings(data_dir=folder / "data", database_url=db_url,
                            broker_url=args.redis_url, queue=queue, ca_passphrase=PASSPHRASE)
        app = make_context(settings)
        workers = Workers(env, folder, worker_count)
        try:
            ready = workers.start()
            log(f"  {worker_count} worker(s) ready after {ready:.1f}s; warming up ...")
            warm = warm_up(app, engine, workers, warmup_csrs)
            out = {"key_type": key_type, "workers": worker_count, "serial_mode": serial_mode,
                   "queue": queue,
                   "workers_ready_seconds": round(ready, 2), "warmup_jobs": warm}
            if latency_csrs:
                out["latency"] = run_latency(app, engine, workers, latency_csrs,
                                             args.latency_rate, args.latency_poll)
            out["throughput"] = run_throughput(app, engine, workers, csrs)
            if drain_csrs:
                out["drain"] = run_drain(app, engine, workers, drain_csrs)
            if not workers.alive():
                raise RuntimeError("a worker died during the run")
            out["certificates_in_table"], out["last_certificate_verifies"] = \
                check_certificates(engine)
        finally:
            workers.stop()
            app.close()
            client = redis.Redis.from_url(args.redis_url)
            client.delete(queue, f"_kombu.binding.{queue}",  # this run's keys only
                          f"_kombu.binding_permanent.{queue}")
            client.close()
    return out


def check_certificates(engine) -> tuple[int, bool]:
    """Every issued job has its certificate; the newest verifies against the CA."""
    from ca.models import Certificate

    with engine.connect() as conn:
        count = conn.scalar(select(func.count()).select_from(Certificate))
        distinct = conn.scalar(select(func.count(func.distinct(Certificate.serial))))
        issued = conn.scalar(select(func.count()).select_from(SigningJob)
                             .where(SigningJob.state == "issued"))
        der = conn.scalar(select(Certificate.der).order_by(Certificate.id.desc()).limit(1))
        ca_der = conn.scalar(select(CertificateAuthority.cert_der))
    if not count == distinct == issued:
        raise RuntimeError(f"certificates {count}, distinct serials {distinct}, "
                           f"issued jobs {issued}: not exactly once")
    x509.load_der_x509_certificate(der).verify_directly_issued_by(
        x509.load_der_x509_certificate(ca_der))
    return count, True


# ---------------------------------------------------------------- 3. openssl ca loop

def democa(folder: Path, size: int, rng: random.Random, key_type: str) -> Path:
    """bench_sign's demoCA (P-256 key, index.txt with ``size`` entries); for RSA-4096 its key
    and self-signed certificate are replaced."""
    conf = openssl_democa(folder, size, rng)
    if key_type == "rsa4096":
        key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        (folder / "private" / "cakey.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        subprocess.run(["openssl", "req", "-new", "-x509", "-key", "private/cakey.pem", "-out",
                        "cacert.pem", "-days", "3650", "-subj",
                        "/C=GB/O=Example Ltd/CN=openssl ca benchmark RSA-4096 CA", "-addext",
                        "basicConstraints=critical,CA:TRUE", "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign"],
                       cwd=folder, check=True, capture_output=True)
    return conf


def openssl_ca_loop(key_type: str, sizes: list[int], csrs: list[bytes], workdir: Path, *,
                    rounds: int, seed: int) -> dict:
    """``openssl ca -batch`` once per CSR, sequentially, against each index size in
    alternating blocks: the certs/s of a script looping over openssl ca."""
    log(f"openssl ca loop, {KEY_LABEL[key_type]} key: index sizes {sizes}, {len(csrs)} calls "
        "each ...")
    rng = random.Random(seed)
    base = workdir / f"openssl-ca-{key_type}"
    paths = write_requests(base / "requests", csrs)
    confs = {size: democa(base / f"democa-{size}", size, rng, key_type) for size in sizes}
    machine_cpu = MachineCpu()
    load_start = loadavg()
    latencies = time_openssl_ca(confs, paths, base / "out.pem", rounds=rounds)
    results = {}
    for size, lat in latencies.items():
        entries_end = len((confs[size].parent / "index.txt").read_bytes().splitlines())
        results[str(size)] = {
            "entries_at_start": size, "entries_at_end": entries_end, "calls": len(lat),
            "seconds": round(sum(lat), 3), "ms_per_call": round(sum(lat) / len(lat) * 1e3, 3),
            "certs_per_s": round(len(lat) / sum(lat), 3), "latency": latency_summary(lat)}
        log(f"  {size} entries: {results[str(size)]['ms_per_call']:.1f} ms/call, "
            f"{results[str(size)]['certs_per_s']:.2f} certs/s")
    return {"key_type": key_type, "sizes": results,
            "command": "openssl ca -batch -config ca.cnf -in REQ -out out.pem -notext",
            "machine_cpu_busy_percent": machine_cpu.busy_percent(),
            "loadavg_start": load_start, "loadavg_end": loadavg()}


# ---------------------------------------------------------------- goals

def evaluate(report: dict) -> dict:
    sizes = report["config"]["openssl_ca_sizes"]
    small, large = str(min(sizes)), str(max(sizes))
    goals: dict = {"raw_2core": [], "openssl_ca_loop": [], "sequential_vs_random": []}
    random_rates = {(r["key_type"], r["workers"]): r["throughput"]["certs_per_s"]
                    for r in report["queue"] if r.get("serial_mode", "random") == "random"}
    for run in report["queue"]:
        kt, w = run["key_type"], run["workers"]
        rate = run["throughput"]["certs_per_s"]
        raw = report["raw"][kt]
        pyca2 = max(raw[x]["pyca"]["multi2"]["sign_per_s"] for x in ("before", "after"))
        if "drain" in run:  # every run's, sequential serials too
            run["drain_ratio_vs_pyca_2proc"] = round(run["drain"]["certs_per_s"] / pyca2, 4)
        if run.get("serial_mode", "random") != "random":
            if (kt, w) in random_rates:
                ratio = rate / random_rates[(kt, w)]
                run["ratio_vs_random_serials"] = round(ratio, 4)
                goals["sequential_vs_random"].append({
                    "key_type": kt, "workers": w, "certs_per_s": rate,
                    "random_certs_per_s": random_rates[(kt, w)], "ratio": round(ratio, 4),
                    "goal": SEQUENTIAL_GOAL, "met": ratio >= SEQUENTIAL_GOAL})
            continue  # the other goals are judged on random serials, the default
        one = max(raw[x]["single"]["sign_per_wall_s"] for x in ("before", "after"))
        two = max(raw[x]["multi2"]["sign_per_wall_s"] for x in ("before", "after"))
        pyca1 = max(raw[x]["pyca"]["single"]["sign_per_s"] for x in ("before", "after"))
        run["ratio_vs_pyca_1proc"] = round(rate / pyca1, 4)
        run["ratio_vs_pyca_2proc"] = round(rate / pyca2, 4)
        run["ratio_vs_openssl_1proc"] = round(rate / one, 4)
        run["ratio_vs_openssl_multi2"] = round(rate / two, 4)
        if w == 2:
            goals["raw_2core"].append({
                "key_type": kt, "workers": w, "certs_per_s": rate,
                "pyca_2proc_sign_per_s": pyca2, "ratio": run["ratio_vs_pyca_2proc"],
                "goal": RAW_GOAL, "met": run["ratio_vs_pyca_2proc"] >= RAW_GOAL,
                "openssl_multi2_sign_per_wall_s": two,
                "ratio_vs_openssl": run["ratio_vs_openssl_multi2"]})
        loop = report["openssl_ca"].get(kt)
        if not loop:
            continue
        for which, size in (("small", small), ("large", large)):
            if size not in loop["sizes"]:
                continue
            ratio = rate / loop["sizes"][size]["certs_per_s"]
            run[f"ratio_vs_openssl_ca_{size}"] = round(ratio, 2)
            goals["openssl_ca_loop"].append({
                "key_type": kt, "workers": w, "index_entries": int(size),
                "certs_per_s": rate, "openssl_ca_certs_per_s": loop["sizes"][size]["certs_per_s"],
                "ratio": round(ratio, 2), "goal": LOOP_GOALS[which],
                "met": ratio >= LOOP_GOALS[which]})
    return goals


# ---------------------------------------------------------------- report

def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


def _run_label(run: dict) -> str:
    """The key type, and "seq" for a sequential-serial CA's run."""
    return KEY_LABEL[run["key_type"]] + (" seq" if run.get("serial_mode") == "sequential"
                                         else "")


def render_table(report: dict) -> str:
    cfg, m = report["config"], report["machine"]
    sizes = cfg["openssl_ca_sizes"]
    small, large = str(min(sizes)), str(max(sizes))
    lines = [
        f"pkiq signing-queue benchmark - {report['started_at']} "
        f"({'quick' if cfg['quick'] else 'full'} run, {report['elapsed_seconds']:.0f}s)",
        f"machine: nproc {m['nproc']}, {m['cpu_model']}; load avg at start "
        f"{report['loadavg_start']}, at end {report['loadavg_end']}",
        f"openssl {m['openssl_binary']}; PostgreSQL {report['postgresql']['server_version']} "
        f"(synchronous_commit {report['postgresql']['synchronous_commit']}); Redis "
        f"{report['redis']['redis_version']}",
        "",
        "Raw sign rates, before / after (cryptography: the CA key through the library pkiq "
        "signs with, 1 process and 2 released together; openssl speed -mr: its signatures "
        "over wall-clock seconds):",
    ]
    for kt, raw in report["raw"].items():
        b, a = raw["before"], raw["after"]
        lines.append(
            f"  {KEY_LABEL[kt]:<8} cryptography 1 proc {b['pyca']['single']['sign_per_s']:>9.1f}"
            f" / {a['pyca']['single']['sign_per_s']:<9.1f} 2 procs "
            f"{b['pyca']['multi2']['sign_per_s']:>9.1f} / {a['pyca']['multi2']['sign_per_s']:<9.1f}"
            f"  openssl 1 proc {b['single']['sign_per_wall_s']:.1f} / "
            f"{a['single']['sign_per_wall_s']:.1f}, -multi 2 {b['multi2']['sign_per_wall_s']:.1f}"
            f" / {a['multi2']['sign_per_wall_s']:.1f}")
    lines += ["", f"End to end, submit to issued (Redis + PostgreSQL; {cfg['request_keys']} cached "
              f"P-256 request keys; {cfg['submit_chunk']} requests per submit transaction, "
              f"{cfg['jobs_per_message']} job ids per message):"]
    head = (f"{'CA key':<12} {'wk':>2} {'jobs':>6} {'s':>7} {'certs/s':>8} {'submit/s':>8} "
            f"{'vs lib1':>8} {'vs lib2':>8} {'vs ossl2':>8} {f'vs ca@{small}':>10} "
            f"{f'vs ca@{large}':>12} {'task ms':>7} {'box%':>5}  CPU ms/job: wk/sub/pg/redis/other")
    lines += [head, "-" * len(head)]
    for run in report["queue"]:
        t = run["throughput"]
        cpu = t["cpu_ms_per_job"]
        key = _run_label(run)
        vs = ((f"{run['ratio_vs_pyca_1proc']:>8.1%} {run['ratio_vs_pyca_2proc']:>8.1%} "
               f"{run['ratio_vs_openssl_multi2']:>8.1%} ")
              if "ratio_vs_pyca_1proc" in run else f"{'-':>8} {'-':>8} {'-':>8} ")
        lines.append(
            f"{key:<12} {run['workers']:>2} {t['jobs']:>6} "
            f"{t['seconds']:>7.1f} {t['certs_per_s']:>8.1f} {t['submit_per_s']:>8.1f} "
            f"{vs}"
            f"{_times(run.get(f'ratio_vs_openssl_ca_{small}')):>10} "
            f"{_times(run.get(f'ratio_vs_openssl_ca_{large}')):>12} "
            f"{t['task_ms_per_job']:>7.2f} {t['machine_cpu_busy_percent'] or 0:>5.0f}  "
            f"{cpu['workers']:.1f}/{cpu['submitter']:.1f}/{cpu['postgresql']:.1f}/"
            f"{cpu['redis']:.1f}/{cpu['other']:.1f}")
    lines.append("  vs lib1 / vs lib2: certs/s over cryptography's sign rate in 1 / 2 processes "
                 "(the yardstick); vs ossl2: over openssl speed -multi 2, wall-clock;")
    lines.append("  vs ca@N: over the openssl ca loop's certs/s;")
    lines.append("  task ms: Celery's 'succeeded in' summed over the tasks, per job (a task "
                 "signs up to a message's jobs, incl. commit); "
                 "box%: whole-machine CPU busy;")
    lines.append("  CPU ms/job: CPU time per job of the worker processes, this process (the "
                 "submitter), PostgreSQL, Redis and everything else.")
    drains = [r for r in report["queue"] if "drain" in r]
    if drains:
        lines += ["", "Diagnosis, not the requirement's measure - pre-queued jobs drained with "
                  "the submitter idle:"]
        for run in drains:
            d = run["drain"]
            ms = d["cpu_ms_per_job"]
            lines.append(
                f"  {_run_label(run):<12} {run['workers']} worker(s): {d['jobs']} jobs "
                f"in {d['seconds']:.1f}s = {d['certs_per_s']:.1f} certs/s "
                f"({run['drain_ratio_vs_pyca_2proc']:.1%} of cryptography's 2-process rate); "
                f"CPU ms/job: "
                f"workers {ms['workers']:.1f}, postgresql {ms['postgresql']:.1f}, redis "
                f"{ms['redis']:.1f}; pool children busy {d['pool_child_busy_fraction']:.0%}")
    if report["openssl_ca"]:
        lines += ["", f"openssl ca -batch loop (one process per certificate, sequential; "
                  f"{cfg['openssl_ca_calls']} calls per size):"]
        for kt, loop in report["openssl_ca"].items():
            cells = ", ".join(
                f"{int(s):,} entries: {r['ms_per_call']:.1f} ms/call = {r['certs_per_s']:.2f} "
                "certs/s" for s, r in loop["sizes"].items())
            lines.append(f"  {KEY_LABEL[kt]:<8} {cells}")
    lat = [r for r in report["queue"] if "latency" in r]
    if lat:
        lines += ["", "Light load, 1 worker, one job at a time (rows: finished_at - "
                  "submitted_at; observed: until this process saw it issued):"]
        for run in lat:
            r = run["latency"]
            rows, seen = r["rows_finished_minus_submitted"], r["observed_submit_to_issued"]
            lines.append(
                f"  {KEY_LABEL[run['key_type']]:<8} {r['jobs']} jobs at "
                f"{r['achieved_rate_per_s']:.1f}/s: rows p50 {rows['p50_ms']:.1f} ms, p99 "
                f"{rows['p99_ms']:.1f} ms; observed p50 {seen['p50_ms']:.1f} ms, p99 "
                f"{seen['p99_ms']:.1f} ms (poll {r['poll_seconds'] * 1e3:.0f} ms)")
    goals = report["goals"]
    lines += ["", "Goals:"]
    for g in goals["raw_2core"]:
        lines.append(f"  {KEY_LABEL[g['key_type']]:<8} 2 workers >= {g['goal']:.0%} of "
                     f"cryptography's 2-process sign rate: {g['certs_per_s']:.1f} / "
                     f"{g['pyca_2proc_sign_per_s']:.1f} = {g['ratio']:.1%}  "
                     f"{'MET' if g['met'] else 'NOT MET'} (openssl speed -multi 2, wall-clock: "
                     f"{g['openssl_multi2_sign_per_wall_s']:.1f}, {g['ratio_vs_openssl']:.1%})")
    for g in goals["openssl_ca_loop"]:
        lines.append(f"  {KEY_LABEL[g['key_type']]:<8} {g['workers']} worker(s) >= "
                     f"{g['goal']:g}x the openssl ca loop at {g['index_entries']:,}: "
                     f"{g['ratio']:.1f}x  {'MET' if g['met'] else 'NOT MET'}")
    for g in goals["sequential_vs_random"]:
        lines.append(f"  {KEY_LABEL[g['key_type']]:<8} {g['workers']} worker(s), sequential "
                     f"serials >= {g['goal']:.0%} of random ones: {g['certs_per_s']:.1f} / "
                     f"{g['random_certs_per_s']:.1f} = {g['ratio']:.1%}  "
                     f"{'MET' if g['met'] else 'NOT MET'}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int,
                        help="jobs per configuration (default 10000; --quick: 200)")
    parser.add_argument("--rsa-count", type=int,
                        help="jobs per RSA-4096 configuration (default: --count)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--postgres", action="store_true",
                        help="accepted for bench/run; this benchmark always uses PostgreSQL")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="server URL (a schema per configuration is created and dropped)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                        help="broker (default $PKIQ_BENCH_REDIS_URL, $PKIQ_TEST_REDIS_URL or "
                        "redis://127.0.0.1:6379/0); a fresh queue name per configuration")
    parser.add_argument("--key-types", default=",".join(CA_KEY_TYPES),
                        help="CA key types (default ec-p256,rsa4096)")
    parser.add_argument("--workers", default="1,2", help="worker process counts (default 1,2)")
    parser.add_argument("--serial-modes", default="random",
                        help="CA serial modes to run (random, sequential; default random): "
                        "sequential runs are compared with the random run of the same key "
                        "and worker count")
    parser.add_argument("--speed-seconds", type=int,
                        help="seconds per openssl speed run (default 5; --quick: 1)")
    parser.add_argument("--openssl-ca-sizes", default=None,
                        help="index.txt entries (default 100,200000; --quick: 100,20000)")
    parser.add_argument("--openssl-ca-calls", type=int,
                        help="openssl ca calls per size and key (default 100; --quick: 10)")
    parser.add_argument("--no-openssl-ca", action="store_true",
                        help="skip the openssl ca loop")
    parser.add_argument("--latency-jobs", type=int,
                        help="jobs in the light-load latency run (default 200; --quick: 40)")
    parser.add_argument("--latency-rate", type=float, default=20.0,
                        help="light-load submit rate, jobs/s (default 20)")
    parser.add_argument("--latency-poll", type=float, default=0.005,
                        help="seconds between polls for finished jobs (default 0.005)")
    parser.add_argument("--latency-key-types", default=",".join(CA_KEY_TYPES),
                        help="CA key types with a latency run (1 worker; default both)")
    parser.add_argument("--drain-jobs", type=int,
                        help="pre-queued jobs drained with the submitter idle, per "
                        "configuration (default 2000; --quick: 100; 0: skip)")
    parser.add_argument("--no-wait", action="store_true",
                        help=f"do not wait for a running {OTHER_BENCHMARK}")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # bench/run passes every benchmark the same arguments
        log(f"bench_queue: ignoring options meant for other benchmarks: {' '.join(unknown)}")
    quick = args.quick
    args.count = args.count or (200 if quick else 10000)
    args.rsa_count = args.rsa_count or args.count
    args.speed_seconds = args.speed_seconds or (1 if quick else 5)
    args.openssl_ca_sizes = sorted(int(s) for s in (
        args.openssl_ca_sizes or ("100,20000" if quick else "100,200000")).split(","))
    args.openssl_ca_calls = args.openssl_ca_calls or (10 if quick else 100)
    args.latency_jobs = args.latency_jobs if args.latency_jobs is not None else (
        40 if quick else 200)
    args.drain_jobs = args.drain_jobs if args.drain_jobs is not None else (
        100 if quick else 2000)
    args.key_types = [k.strip() for k in args.key_types.split(",") if k.strip()]
    args.latency_key_types = [k.strip() for k in args.latency_key_types.split(",") if k.strip()]
    args.workers = [int(w) for w in args.workers.split(",")]
    args.serial_modes = [m.strip() for m in args.serial_modes.split(",") if m.strip()]
    if not set(args.serial_modes) <= {"random", "sequential"} or not args.serial_modes:
        parser.error("--serial-modes takes random and/or sequential")
    for k in args.key_types + args.latency_key_types:
        if k not in CA_KEY_TYPES:
            parser.error(f"{k!r} is not one of {', '.join(CA_KEY_TYPES)}")
    if len(args.openssl_ca_sizes) != 2:
        parser.error("--openssl-ca-sizes takes two sizes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("openssl", "pgrep"):
        if not shutil.which(tool):
            print(f"bench_queue: the {tool} binary is required", file=sys.stderr)
            return 2
    waited = ({"skipped": True} if args.no_wait else
              wait_for_other_benchmarks(poll_seconds=20, limit_seconds=1800))
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    redis_info = redis.Redis.from_url(args.redis_url).info("server")
    report: dict = {
        "benchmark": "queue",
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([f"{Path(sys.executable).name} -m bench.bench_queue",
                             *(argv if argv is not None else sys.argv[1:])]),
        "config": {"count": args.count, "rsa_count": args.rsa_count, "quick": args.quick,
                   "key_types": args.key_types, "workers": args.workers,
                   "serial_modes": args.serial_modes,
                   "speed_seconds": args.speed_seconds,
                   "openssl_ca_sizes": args.openssl_ca_sizes,
                   "openssl_ca_calls": 0 if args.no_openssl_ca else args.openssl_ca_calls,
                   "latency_jobs": args.latency_jobs, "latency_rate": args.latency_rate,
                   "latency_poll": args.latency_poll,
                   "latency_key_types": args.latency_key_types,
                   "drain_jobs": args.drain_jobs,
                   "request_keys": REQUEST_KEYS, "request_key_type": "ec-p256",
                   "profile": DEFAULT_PROFILE, "submit_chunk": SUBMIT_CHUNK,
                   "jobs_per_message": JOBS_PER_MESSAGE,
                   "redis_url": args.redis_url, "submit_path": (
                       "in-process: service.jobs.queue_requests per SUBMIT_CHUNK requests "
                       "(one transaction, then announced, JOBS_PER_MESSAGE ids a message)")},
        "waited_for_other_benchmark": waited,
        "machine": machine_facts(),
        "loadavg_start": loadavg(),
        "postgresql": postgres_facts(args.postgres_url),
        "redis": {k: redis_info.get(k) for k in ("redis_version", "redis_mode")},
        "raw": {}, "queue": [], "openssl_ca": {},
    }
    log(f"machine: nproc {report['machine']['nproc']}, load avg {report['loadavg_start']}")
    count = max(args.count, args.rsa_count)
    log(f"generating {count} CSRs + {WARMUP_JOBS} warm-up + {args.latency_jobs} latency + "
        f"{args.drain_jobs} drain (P-256 request keys, untimed) ...")
    keys = make_request_keys("ec-p256", REQUEST_KEYS)
    csrs = make_csrs(count, keys)
    warmup_csrs = make_csrs(WARMUP_JOBS, keys, prefix="warm")
    latency_csrs = make_csrs(args.latency_jobs, keys, prefix="lat")
    drain_csrs = make_csrs(args.drain_jobs, keys, prefix="drain")

    with tempfile.TemporaryDirectory(prefix="pkiq-bench-queue-") as tmp:
        workdir = Path(tmp)
        for key_type in args.key_types:
            n = args.rsa_count if key_type == "rsa4096" else args.count
            before = raw_rates(key_type, args.speed_seconds)
            for worker_count in args.workers:
                latency = (latency_csrs if worker_count == 1 and args.latency_jobs
                           and key_type in args.latency_key_types else None)
                for mode in args.serial_modes:
                    report["queue"].append(run_config(
                        args, key_type, worker_count, csrs[:n], warmup_csrs,
                        latency if mode == args.serial_modes[0] else None, drain_csrs,
                        workdir, mode))
            after = raw_rates(key_type, args.speed_seconds)
            report["raw"][key_type] = {"before": before, "after": after}
            if not args.no_openssl_ca:
                report["openssl_ca"][key_type] = openssl_ca_loop(
                    key_type, args.openssl_ca_sizes, csrs[:args.openssl_ca_calls], workdir,
                    rounds=10, seed=4321)

    report["goals"] = evaluate(report)
    report["loadavg_end"] = loadavg()
    report["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report["elapsed_seconds"] = round(time.monotonic() - t_start, 1)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = args.results_dir / f"queue-{started:%Y%m%dT%H%M%SZ}{suffix}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    shutil.copyfile(path, args.results_dir / f"queue-latest{suffix}.json")
    print(render_table(report))
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
