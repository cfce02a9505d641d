"""HTTP API benchmark: signing jobs submitted through ``POST /api/v1/jobs`` while workers sign.

The issue's benchmark (issue 13): "Submissions accepted per second and p99 latency with 50
concurrent clients over loopback while workers sign, beside the same submissions through
``pkiq submit``. Goal: >= 500 submissions/s on this 2-core machine with p99 under 100 ms,
and the API's share of CPU per job under 1 ms."

The estate, as an operator runs it: a fresh database and queue (the embedded default: a
SQLite file and the filesystem queue in a temporary ``PKIQ_DATA_DIR``; with ``--postgres``
a PostgreSQL schema of its own and a fresh queue name on the machine's Redis), ``pkiq ca
create Bench`` (P-256), a ``requester`` token per phase (``pkiq token create``), ``--workers``
signing processes (``python -m pkiq worker -c 1``, default 2) and ``python -m pkiq web``
(``--web-workers``, default 1), each a process of its own on this machine.

The CSRs are made before anything is timed: P-256 requests with distinct names (a few cached
request keys), so each submission is a new job. Phases, each starting with the queue empty:

1. paced: ``--count`` submissions (default 5,000) from ``--clients`` keep-alive connections
   (default 50) at ``--rate`` submissions/s in all (default 500, the goal): each client at a
   fixed period from a random phase. The goal's measure: did the API keep up, and the p99.
2. saturation: another ``--count`` submissions, each client sending its next the moment it
   has its answer: the most the API accepts per second with 50 clients.
3. ``pkiq submit``: another ``--count`` CSRs as files, one ``python -m pkiq submit --ca
   Bench --json FILE...`` process (its own rate: 100 requests a transaction), timed from
   start to exit, and from its first to its last job row (start-up left out).

The load generator (``bench.api_load``) is a process of its own: raw-socket asyncio
protocols on uvloop, one JSON body per request, latency from the send to the answer's last
byte. Per phase: accepted submissions/s (201s over first send to last answer), statuses,
errors, latency p50/p95/p99/max, the web server's CPU time (its process tree, from
/proc/PID/stat) per accepted job, and the CPU of the workers, PostgreSQL, Redis, the load
generator and the rest of the machine over the phase; then the workers' certs/s (first
submission to last ``finished_at``) and how many jobs were already issued when the last
submission was answered. Every job must end issued, with the requester its token's name.

``--profile`` adds a diagnosis run: the same web app (``web.server.run`` over
``pkiq.cli_common.make_context``, what ``pkiq web`` runs) under cProfile in every thread,
a saturation run of ``--count`` / 2 submissions, and the time by stage.

Run through ``bench/run api``; results go to ``bench/results/api-<time>.json`` and to stdout
as a table, progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.bench_queue import DEFAULT_REDIS_URL, Workers, _process_ticks
from bench.bench_sign import (
    DEFAULT_POSTGRES_URL,
    RESULTS_DIR,
    ROOT,
    Backend,
    MachineCpu,
    loadavg,
    log,
    machine_facts,
    make_csrs,
    make_request_keys,
    postgres_facts,
)
from bench.bench_web import Server, cpu_pressure_us, free_port, percentile, process_tree
from ca import jobs
from ca.models import SigningJob
from shell.db import make_engine
from shell.settings import Settings

PASSPHRASE = "pkiq api benchmark passphrase"
CA_NAME = "Bench"
GOAL_RATE = 500.0  # submissions/s
GOAL_P99_MS = 100.0
GOAL_CPU_MS = 1.0  # the API's CPU per job
KEPT_UP = 0.99  # a paced run kept up when it accepted this share of the offered rate
REQUEST_KEYS = 4
FINISHED = tuple(jobs.FINISHED)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def latency(values: list[int]) -> dict:
    ordered = sorted(values)
    return {"count": len(ordered), "p50_ms": round(percentile(ordered, 0.50), 2),
            "p95_ms": round(percentile(ordered, 0.95), 2),
            "p99_ms": round(percentile(ordered, 0.99), 2),
            "max_ms": round(ordered[-1] / 1000, 2) if ordered else None}


def utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------- CPU by process group

class GroupCpu:
    """CPU seconds over an interval per group: the web server (its process tree), the
    workers (their process groups), the load generator, PostgreSQL, Redis, the rest."""

    def __init__(self, web_pids: list[int], worker_groups: list[int], loadgen: int | None):
        self.web, self.workers, self.loadgen = set(web_pids), set(worker_groups), loadgen
        self.start = _process_ticks()

    def group(self, pid: int, comm: str, pgrp: int) -> str:
        if pid in self.web:
            return "web"
        if pgrp in self.workers:
            return "workers"
        if pid == self.loadgen:
            return "load generator"
        if comm.startswith("postgres"):
            return "postgresql"
        if comm.startswith("redis"):
            return "redis"
        return "other"

    def seconds(self) -> dict:
        totals = dict.fromkeys(("web", "workers", "load generator", "postgresql", "redis",
                                "other"), 0.0)
        for pid, (comm, pgrp, ticks, started) in _process_ticks().items():
            before = self.start.get(pid)
            base = before[2] if before and before[3] == started else 0
            totals[self.group(pid, comm, pgrp)] += (ticks - base) / CLOCK_TICKS
        return {k: round(v, 3) for k, v in totals.items()}


# ---------------------------------------------------------------- the estate

class Estate:
    def __init__(self, args, folder: Path, engine_url: str | None):
        self.folder = folder
        self.data = folder / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKIQ_")}
        env.update(PKIQ_DATA_DIR=str(self.data), PKIQ_CA_PASSPHRASE=PASSPHRASE)
        self.queue = None
        if args.postgres:
            self.queue = f"pkiq-bench-{secrets.token_hex(4)}"
            env.update(PKIQ_DATABASE_URL=engine_url, PKIQ_BROKER_URL=args.redis_url,
                       PKIQ_QUEUE=self.queue)
        self.env = env
        settings = Settings(data_dir=self.data, database_url=engine_url)
        self.database_url = settings.effective_database_url
        self.engine = None

    def pkiq(self, *argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "pkiq", *argv], env=self.env, cwd=ROOT,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pkiq {argv[0]} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def token(self, name: str) -> str:
        return json.loads(self.pkiq("token", "create", name, "--role", "requester",
                                    "--json"))["token"]

    def connect(self):
        self.engine = make_engine(self.database_url)
        return self.engine

    def rows(self, requester: str) -> list:
        with self.engine.connect() as conn:
            return conn.execute(select(
                SigningJob.id, SigningJob.state, SigningJob.requester, SigningJob.serial,
                SigningJob.submitted_at, SigningJob.finished_at,
            ).where(SigningJob.requester == requester).order_by(SigningJob.id)).all()

    def wait_finished(self, requester: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.engine.connect() as conn:
                done = conn.scalar(select(func.count()).select_from(SigningJob).where(
                    SigningJob.requester == requester, SigningJob.state.in_(FINISHED)))
            if done >= count:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done} of {count} {requester} jobs finished after "
                                 f"{timeout:.0f} s")
            time.sleep(0.2)


def signing(estate: Estate, requester: str, count: int, last_answer: float) -> dict:
    """The jobs of one phase from their rows: all issued, and the workers' rate."""
    estate.wait_finished(requester, count, timeout=120 + count / 20)
    rows = estate.rows(requester)
    states: dict[str, int] = {}
    for row in rows:
        states[row.state] = states.get(row.state, 0) + 1
    if states != {"issued": count} or len({r.serial for r in rows}) != count:
        raise SystemExit(f"{requester}: not every job issued exactly once: {states}")
    first = min(utc(r.submitted_at) for r in rows)
    last_sub = max(utc(r.submitted_at) for r in rows)
    last = max(utc(r.finished_at) for r in rows)
    span = (last - first).total_seconds()
    cutoff = dt.datetime.fromtimestamp(last_answer, dt.UTC) if last_answer else last
    return {"issued": count, "certs_per_s": round(count / span, 1) if span else None,
            "first_submitted_to_last_finished_s": round(span, 3),
            "rows_submit_span_s": round((last_sub - first).total_seconds(), 3),
            "issued_by_last_answer": sum(utc(r.finished_at) <= cutoff for r in rows),
            "drain_after_last_answer_s": round((last - cutoff).total_seconds(), 3)}


# ---------------------------------------------------------------- phases

def api_phase(estate: Estate, server: Server, workers: Workers, csrs: list[bytes], *,
              label: str, rate: float, clients: int) -> dict:
    requester = f"bench-api-{label}"
    token = estate.token(requester)
    bodies = estate.folder / f"bodies-{label}.jsonl"
    with bodies.open("w") as handle:
        for csr in csrs:
            handle.write(json.dumps({"ca": CA_NAME, "csr": csr.decode()}) + "\n")
    result_path = estate.folder / f"load-{label}.json"
    config = {"port": server.port, "token": token, "bodies_path": str(bodies),
              "clients": clients, "rate": rate, "result_path": str(result_path)}
    child = subprocess.Popen([sys.executable, "-m", "bench.api_load", json.dumps(config)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline().strip()
    if line != "ready":
        child.kill()
        raise SystemExit(f"load generator failed before the run ({line!r}):\n"
                         f"{server.log_tail()}")
    server.pids = process_tree(server.process.pid)
    groups = GroupCpu(server.pids, workers.groups, child.pid)
    web_before = server.cpu()
    machine, load_before, pressure_before = MachineCpu(), loadavg(), cpu_pressure_us()
    clock = time.monotonic()
    child.stdin.write(f"{time.time() + 0.05}\n")
    child.stdin.flush()
    child.communicate(timeout=3600)
    web_after = server.cpu()
    cpu = groups.seconds()
    elapsed = time.monotonic() - clock
    if child.returncode == 0:  # it has exited: its CPU from its own account
        with contextlib.suppress(OSError, ValueError):
            cpu["load generator"] = json.loads(result_path.read_text())["cpu_s"]
    pressure_after = cpu_pressure_us()
    busy, load_after = machine.busy_percent(), loadavg()
    if child.returncode:
        raise SystemExit(f"load generator exited with {child.returncode}")
    out = json.loads(result_path.read_text())
    result_path.unlink()
    accepted = out["statuses"].get("201", 0)
    span = out["last_answer"] - out["first_send"]
    web_cpu = sum(web_after[p] - web_before.get(p, 0.0) for p in web_after)
    result = {
        "phase": label, "via": "API", "clients": clients, "offered_per_s": rate or None,
        "submissions": len(csrs), "accepted": accepted, "new_jobs": out["new"],
        "distinct_ids": len(set(out["ids"])), "statuses": out["statuses"],
        "errors": out["errors"], "error_samples": out["samples"],
        "seconds": round(span, 3), "accepted_per_s": round(accepted / span, 1),
        "latency": latency(out["latency_us"]),
        "latency_from_due": latency(out["latency_due_us"]) if out["latency_due_us"] else None,
        "sends_behind_schedule": out["behind"],
        "web_cpu_s": round(web_cpu, 3),
        "web_cpu_ms_per_job": round(1000 * web_cpu / accepted, 3) if accepted else None,
        "web_cores_busy": round(web_cpu / span, 2),
        "cpu_s_by_group": cpu,
        "cpu_ms_per_job_by_group": {k: round(1000 * v / accepted, 3) if accepted else None
                                    for k, v in cpu.items()},
        "load_generator_cpu_s": out["cpu_s"],
        "machine_busy_percent": busy,
        "cpu_pressure_some_percent": (
            round(100 * (pressure_after - pressure_before) / 1e6 / elapsed, 1)
            if pressure_before is not None and pressure_after is not None else None),
        "loadavg": [load_before, load_after],
    }
    if accepted != len(csrs) or out["new"] != len(csrs) or len(set(out["ids"])) != len(csrs):
        raise SystemExit(f"{label}: {accepted} of {len(csrs)} accepted, {out['new']} new, "
                         f"errors {out['errors']}, e.g. {out['samples'][:2]}")
    result["signing"] = signing(estate, requester, len(csrs), out["last_answer"])
    lat = result["latency"]
    log(f"  {label}: {result['accepted_per_s']:,.1f} accepted/s, p50 {lat['p50_ms']} p95 "
        f"{lat['p95_ms']} p99 {lat['p99_ms']} max {lat['max_ms']} ms, web "
        f"{result['web_cpu_ms_per_job']} CPU ms/job ({result['web_cores_busy']} cores), "
        f"box {busy}%, signed {result['signing']['certs_per_s']}/s")
    return result


def cli_phase(estate: Estate, workers: Workers, csrs: list[bytes]) -> dict:
    requester = "bench-cli"
    folder = estate.folder / "csrs"
    folder.mkdir()
    paths = []
    for index, csr in enumerate(csrs):
        path = folder / f"c{index:05d}.csr"
        path.write_bytes(csr)
        paths.append(str(path))
    groups = GroupCpu([], workers.groups, None)
    machine, load_before = MachineCpu(), loadavg()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "pkiq", "submit", "--ca", CA_NAME,
                           "--requester", requester, "--json", *paths], env=estate.env,
                          cwd=ROOT, capture_output=True, text=True)
    ended = time.time()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = groups.seconds()
    busy, load_after = machine.busy_percent(), loadavg()
    if done.returncode != 0:
        raise SystemExit(f"pkiq submit failed ({done.returncode}): {done.stderr[-2000:]}")
    rows = json.loads(done.stdout)
    new = sum(1 for r in rows if r.get("new") and r["state"] in ("queued", "signing",
                                                                 "issued"))
    if new != len(csrs):
        raise SystemExit(f"pkiq submit: {new} of {len(csrs)} new jobs")
    submit_cpu = (children_after.ru_utime + children_after.ru_stime
                  - children_before.ru_utime - children_before.ru_stime)
    span = ended - started
    result = {
        "phase": "pkiq submit", "via": "CLI", "submissions": len(csrs), "accepted": new,
        "seconds": round(span, 3), "accepted_per_s": round(new / span, 1),
        "submit_cpu_s": round(submit_cpu, 3),
        "submit_cpu_ms_per_job": round(1000 * submit_cpu / new, 3),
        "cpu_s_by_group": cpu,
        "cpu_ms_per_job_by_group": {k: round(1000 * v / new, 3) for k, v in cpu.items()},
        "machine_busy_percent": busy, "loadavg": [load_before, load_after],
    }
    result["signing"] = signing(estate, requester, len(csrs), ended)
    rows_span = result["signing"]["rows_submit_span_s"]
    result["rows_accepted_per_s"] = round(new / rows_span, 1) if rows_span else None
    log(f"  pkiq submit: {result['accepted_per_s']:,.1f}/s start to exit "
        f"({result['rows_accepted_per_s']}/s first to last job row), "
        f"{result['submit_cpu_ms_per_job']} CPU ms/job, signed "
        f"{result['signing']['certs_per_s']}/s")
    return result


# ---------------------------------------------------------------- profile

def profile_run(estate: Estate, workers: Workers, csrs: list[bytes], args) -> dict:
    """The same app under cProfile in every thread; a saturation run; the time by stage."""
    port = free_port()
    stats_path = estate.folder / "web.prof"
    command = [sys.executable, "-m", "bench.api_profiled", "127.0.0.1", str(port),
               str(stats_path)]
    server = Server("pkiq web (profiled)", 1, command, estate.env,
                    estate.folder / "profiled.log", port)
    log(f"profile: the web app under cProfile on port {port}, {len(csrs)} submissions ...")
    server.start("/healthz")
    try:
        run = api_phase(estate, server, workers, csrs, label="profiled", rate=0,
                        clients=args.clients)
    finally:
        server.stop()
    from bench.api_profiled import report

    return {"run": {k: run[k] for k in ("accepted", "accepted_per_s", "latency",
                                         "web_cpu_ms_per_job")},
            **report(stats_path, run["accepted"])}


# ---------------------------------------------------------------- report

def summarise(report: dict) -> dict:
    paced, sat, cli = (report["phases"][k] for k in ("paced", "saturation", "cli"))
    kept_up = (not paced["errors"] and paced["accepted_per_s"] >= KEPT_UP * paced[
        "offered_per_s"])
    return {
        "goal": f">= {GOAL_RATE:.0f} submissions/s with p99 < {GOAL_P99_MS:.0f} ms (50 "
                f"clients), API CPU < {GOAL_CPU_MS:g} ms per job",
        "paced_kept_up": kept_up,
        "paced_p99_ms": paced["latency"]["p99_ms"],
        "saturation_per_s": sat["accepted_per_s"],
        "saturation_p99_ms": sat["latency"]["p99_ms"],
        "rate_goal_met": bool(kept_up and sat["accepted_per_s"] >= GOAL_RATE),
        "p99_goal_met": bool(kept_up and paced["latency"]["p99_ms"] < GOAL_P99_MS),
        "cpu_ms_per_job": paced["web_cpu_ms_per_job"],
        "cpu_goal_met": paced["web_cpu_ms_per_job"] < GOAL_CPU_MS,
        "rate_vs_goal": round(sat["accepted_per_s"] / GOAL_RATE, 3),
        "cpu_vs_goal": round(paced["web_cpu_ms_per_job"] / GOAL_CPU_MS, 2),
        "api_saturation_vs_pkiq_submit": round(sat["accepted_per_s"] / cli["accepted_per_s"],
                                               3),
        "api_saturation_vs_pkiq_submit_rows": round(
            sat["accepted_per_s"] / cli["rows_accepted_per_s"], 3)
        if cli.get("rows_accepted_per_s") else None,
        "api_cpu_vs_pkiq_submit_cpu": round(
            paced["web_cpu_ms_per_job"] / cli["submit_cpu_ms_per_job"], 2),
    }


def render(report: dict) -> str:
    a = report["args"]
    backend = ("PostgreSQL + Redis" if a["postgres"] else
               "embedded default (SQLite + filesystem queue)")
    rows = [f"pkiq API submissions: {a['count']:,} per phase, {a['clients']} keep-alive "
            f"clients, {a['workers']} signing worker(s), pkiq web x{a['web_workers']}, "
            f"{backend}; {report['date']}, commit {report['commit']}, load "
            f"{report['loadavg_start']} -> {report['loadavg_end']}",
            "",
            f"{'phase':<12} {'offered':>7} {'acc/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
            f"{'p99 ms':>7} {'max ms':>7} {'err':>4} {'web CPU ms/job':>14} "
            f"{'web cores':>9} {'signed/s':>8} {'box%':>4}  CPU ms/job: workers/pg/redis/"
            "loadgen/other",
            "-" * 140]
    for key in ("paced", "saturation", "cli"):
        r = report["phases"][key]
        c = r["cpu_ms_per_job_by_group"]
        if r["via"] == "API":
            lat = r["latency"]
            cells = (f"{r['offered_per_s'] or 'max':>7} {r['accepted_per_s']:>7,.1f} "
                     f"{lat['p50_ms']:>7.2f} {lat['p95_ms']:>7.2f} {lat['p99_ms']:>7.2f} "
                     f"{lat['max_ms']:>7.1f} {sum(r['errors'].values()):>4} "
                     f"{r['web_cpu_ms_per_job']:>14.3f} {r['web_cores_busy']:>9.2f}")
        else:
            cells = (f"{'own':>7} {r['accepted_per_s']:>7,.1f} {'-':>7} {'-':>7} {'-':>7} "
                     f"{'-':>7} {0:>4} {r['submit_cpu_ms_per_job']:>14.3f} "
                     f"{r['submit_cpu_s'] / r['seconds']:>9.2f}")
        rows.append(f"{r['phase']:<12} {cells} {r['signing']['certs_per_s']:>8,.1f} "
                    f"{r['machine_busy_percent'] or 0:>4.0f}  {c['workers']:.2f}/"
                    f"{c['postgresql']:.2f}/{c['redis']:.2f}/{c['load generator']:.2f}/"
                    f"{c['other']:.2f}")
    cli = report["phases"]["cli"]
    paced = report["phases"]["paced"]
    rows += ["", "acc/s: 201s over first send to last answer (pkiq submit: process start to "
             "exit); latency: send to last byte, client side; web CPU ms/job: the pkiq web "
             "process tree's CPU per accepted job (pkiq submit: its own process); signed/s: "
             "the workers, first submission to last finished_at; box%: whole-machine CPU",
             f"pkiq submit: {cli['accepted_per_s']:,.1f}/s start to exit, "
             f"{cli['rows_accepted_per_s']}/s first to last job row",
             f"paced run: latency from the time each send was due: p99 "
             f"{(paced['latency_from_due'] or {}).get('p99_ms')} ms, "
             f"{paced['sends_behind_schedule']} sends behind schedule"]
    s = report["summary"]
    rows += ["", f"goal '{s['goal']}':",
             f"  {GOAL_RATE:.0f}/s: paced {'kept up' if s['paced_kept_up'] else 'did NOT keep up'}"
             f", saturation {s['saturation_per_s']:,.1f}/s = {s['rate_vs_goal']}x the goal  "
             f"{'MET' if s['rate_goal_met'] else 'NOT MET'}",
             f"  p99 < {GOAL_P99_MS:.0f} ms at {GOAL_RATE:.0f}/s: {s['paced_p99_ms']} ms  "
             f"{'MET' if s['p99_goal_met'] else 'NOT MET'} (at saturation "
             f"{s['saturation_p99_ms']} ms)",
             f"  API CPU < {GOAL_CPU_MS:g} ms per job: {s['cpu_ms_per_job']} ms = "
             f"{s['cpu_vs_goal']}x the goal  {'MET' if s['cpu_goal_met'] else 'NOT MET'}",
             f"  API (saturation) vs pkiq submit: {s['api_saturation_vs_pkiq_submit']}x its "
             f"rate start to exit ({s['api_saturation_vs_pkiq_submit_rows']}x first to last "
             f"row), {s['api_cpu_vs_pkiq_submit_cpu']}x its CPU per job"]
    prof = report.get("profile")
    if prof and "failed" in prof:
        rows += ["", f"profile: failed ({prof['failed']})"]
    elif prof:
        rows += ["", f"profile (cProfile in every thread, {prof['run']['accepted']} "
                 f"submissions at {prof['run']['accepted_per_s']}/s under the profiler; "
                 "ms per job, profiler overhead included):"]
        for name, ms in prof["stages_ms_per_job"].items():
            rows.append(f"  {name:<58} {ms:>7.3f}")
        rows.append("  top functions by own time (ms per job):")
        for entry in prof["top_own_ms_per_job"][:15]:
            rows.append(f"    {entry[1]:>7.3f}  {entry[0]}")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, help="submissions per phase (default 5,000; "
                        "quick 300)")
    parser.add_argument("--clients", type=int, default=50, help="keep-alive API clients")
    parser.add_argument("--rate", type=float, default=GOAL_RATE,
                        help="offered submissions/s of the paced phase (default 500)")
    parser.add_argument("--workers", type=int, default=2, help="signing worker processes")
    parser.add_argument("--web-workers", type=int, default=1, help="pkiq web --workers")
    parser.add_argument("--postgres", action="store_true",
                        help="PostgreSQL and Redis (default: the embedded SQLite and queue)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--profile", action="store_true",
                        help="add a run under cProfile and the time by stage")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, _unknown = parser.parse_known_args(argv)  # bench/run passes every option on
    args.count = args.count or (300 if args.quick else 5000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = loadavg()
    started = time.time()
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    log(f"{date}, commit {commit}, load average {load_start}")
    warm, n = max(2 * args.clients, 100), args.count
    log(f"making {3 * n + warm + (n // 2 if args.profile else 0):,} CSRs (untimed) ...")
    keys = make_request_keys("ec-p256", REQUEST_KEYS)
    csrs = {label: make_csrs(count, keys, prefix=label) for label, count in (
        ("warm", warm), ("paced", n), ("sat", n), ("cli", n),
        ("prof", n // 2 if args.profile else 0))}
    phases: dict = {}
    profile = None
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-api-") as tmp, \
            contextlib.ExitStack() as stack:
        folder = Path(tmp)
        engine_url = None
        if args.postgres:
            engine = stack.enter_context(Backend("postgresql", args.postgres_url).database(
                folder, "api"))
            engine_url = engine.url.render_as_string(hide_password=False)
        estate = Estate(args, folder, engine_url)
        log("pkiq ca create (P-256) ...")
        estate.pkiq("ca", "create", CA_NAME, "--subject",
                    "/C=GB/O=Example Ltd/CN=pkiq API benchmark CA", "--key-type", "ec-p256")
        estate.connect()
        stack.callback(estate.engine.dispose)
        workers = Workers(estate.env, folder, args.workers)
        stack.callback(workers.stop)
        ready = workers.start()
        log(f"{args.workers} worker(s) ready after {ready:.1f} s; pkiq web ...")
        port = free_port()
        server = Server("pkiq web", args.web_workers,
                        [sys.executable, "-m", "pkiq", "web", "--host", "127.0.0.1", "--port",
                         str(port), "--workers", str(args.web_workers)],
                        estate.env, folder / "web.log", port)
        server.start("/healthz")
        stack.callback(server.stop)
        log(f"warm-up: {warm} submissions ...")
        phases["warmup"] = api_phase(estate, server, workers, csrs["warm"], label="warmup",
                                     rate=0, clients=args.clients)
        log(f"paced: {n:,} submissions at {args.rate:g}/s from {args.clients} clients ...")
        phases["paced"] = api_phase(estate, server, workers, csrs["paced"], label="paced",
                                    rate=args.rate, clients=args.clients)
        log(f"saturation: {n:,} submissions from {args.clients} clients ...")
        phases["saturation"] = api_phase(estate, server, workers, csrs["sat"],
                                         label="saturation", rate=0, clients=args.clients)
        log(f"pkiq submit: {n:,} files, one process ...")
        phases["cli"] = cli_phase(estate, workers, csrs["cli"])
        if not workers.alive():
            raise SystemExit("a worker died during the run")
        if args.profile:
            server.stop()
            try:
                profile = profile_run(estate, workers, csrs["prof"], args)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - keep the measured runs
                log(f"profile failed: {exc}")
                profile = {"failed": str(exc)}
        if estate.queue:
            import redis

            client = redis.Redis.from_url(args.redis_url)
            client.delete(estate.queue, f"_kombu.binding.{estate.queue}",
                          f"_kombu.binding_permanent.{estate.queue}")
            client.close()
    report = {"benchmark": "api", "machine": machine_facts(), "method": __doc__,
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "date": date, "commit": commit,
              "postgresql": postgres_facts(args.postgres_url) if args.postgres else None,
              "phases": phases, "profile": profile,
              "loadavg_start": load_start, "loadavg_end": loadavg(),
              "wall_seconds": round(time.time() - started, 1)}
    report["summary"] = summarise(report)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = ("-postgres" if args.postgres else "") + ("-quick" if args.quick else "")
    path = args.results_dir / f"api-{date.replace(':', '').replace('-', '')}{suffix}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    s = report["summary"]
    return 0 if s["rate_goal_met"] and s["p99_goal_met"] and s["cpu_goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
