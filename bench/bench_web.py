"""Web downloads benchmark: Expressways polling their CRL bundle URLs with conditional GET.

The issue's benchmark (issue 11): "1,000 Expressways polling their bundle URLs with
conditional GET over loopback: requests/s and p99; goal >= 2,000 req/s on this 2-core
machine with p99 under 50 ms for 304s."

The estate: a fresh SQLite database in a temporary folder with one pkiq CA ("Root",
P-256) and its CRL, and ``--nodes`` Expressway nodes (default 20) trusting it, their stores
published (``service.stores.publish``). A node needs no server certificate for its CRL
bundles. ``pkiq web`` then runs as a process of its own on 127.0.0.1 (``python -m pkiq web
--port N --workers W``), as an operator starts it.

The load: ``--pollers`` keep-alive connections (default 1,000), poller i asking for node
i mod ``--nodes``'s ``/nodes/FQDN/crls.zip``, from ``--clients`` load-generator processes
(``bench.web_load``: raw-socket asyncio protocols on uvloop, the cheapest Python client).
Each poller first makes one plain GET to learn the ETag, then sends If-None-Match with it.
Per server and worker count (``--workers``, default 1 and 2):

- paced: ``--rate`` requests/s in all (default 2,000), each poller at a fixed period
  (pollers / rate, 0.5 s) with a random phase: the issue's goal;
- saturation: each poller asks again the moment it has its answer (1,000 requests always
  in flight): the most the server answers;
- for pkiq only, paced again while the bundles change: a third of the way in, Root issues a
  new CRL and every store is republished (in the benchmark's process, as the stores tick
  would); each poller then gets one 200 with the new bundle and 304s after.

Every run has ``--warmup`` seconds (default 2) before ``--seconds`` measured (default 10):
requests sent in the measured window count. Per run: answered requests/s, status counts,
errors (refused, reset, no answer within 5 s), latency from send to the last byte (p50,
p99, max, 304s apart), the server's CPU time (its process and any worker processes, from
/proc/PID/stat) per answered request, which does not depend on the load, and the load
generator's CPU.

Yardsticks in the same run, same load: (a) a bare Starlette app on the same uvicorn
(``bench.web_bare``: a dict look-up and a string comparison, then 304 or the bytes), the
physical limit of the stack pkiq uses; (b) nginx serving copies of the same crls.zip files
with its own ETag and 304s, the standard tool (``worker_processes`` = the worker count).
Run through ``bench/run web``; results go to ``bench/results/web-<time>.json`` and to
stdout as a table, progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_sign import RESULTS_DIR, ROOT, MachineCpu, loadavg, log, machine_facts
from ca.nodes import NodeChanges
from service import ServiceContext, cas, nodes, stores
from shell.settings import Settings

PASSPHRASE = b"pkiq web benchmark passphrase"
CA_NAME = "Root"
GOAL_RATE = 2000.0  # requests/s
GOAL_P99_MS = 50.0  # for 304s
KEPT_UP = 0.99  # a paced run kept up when it answered this share of the offered rate
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# ---------------------------------------------------------------- the estate

@dataclass
class Estate:
    folder: Path
    settings: Settings
    ctx: ServiceContext
    nodes: list[str]

    def bundle(self, node: str) -> Path:
        return self.settings.effective_stores_dir / node / "current" / "crls.zip"

    def env(self) -> dict[str, str]:
        """What ``pkiq web`` in another process needs to find this estate."""
        return {**os.environ, "PKIQ_DATA_DIR": str(self.settings.data_dir),
                "PKIQ_DATABASE_URL": self.settings.database_url,
                "PKIQ_STORES_DIR": str(self.settings.effective_stores_dir)}

    def new_crl_everywhere(self) -> dict:
        """Root's next CRL, and every store republished: each node's bundle changes."""
        started = time.perf_counter()
        cas.generate_crl(self.ctx, CA_NAME, passphrase=PASSPHRASE)
        outcomes = stores.publish(self.ctx, passphrase=PASSPHRASE)
        states = [o.state for o in outcomes]
        assert states == ["published"] * len(self.nodes), states
        return {"seconds": round(time.perf_counter() - started, 3), "published": len(states)}


def build_estate(folder: Path, node_count: int) -> Estate:
    settings = Settings(data_dir=folder / "data", database_url=f"sqlite:///{folder}/pkiq.db",
                        stores_dir=folder / "stores")
    ctx = ServiceContext(settings, now_utc)
    cas.create_ca(ctx, name=CA_NAME, subject="/C=GB/O=Example Ltd/CN=pkiq bench Root",
                  key_type="ec-p256", days=3650, passphrase=PASSPHRASE)
    cas.generate_crl(ctx, CA_NAME, passphrase=PASSPHRASE)
    names = [f"exp{i:03d}.example.com" for i in range(node_count)]
    for name in names:  # no certificate: the bundles carry CRLs only
        nodes.add_node(ctx, name, NodeChanges(role="E"))
    outcomes = stores.publish(ctx, passphrase=PASSPHRASE)
    assert [o.state for o in outcomes] == ["published"] * node_count, \
        [o.view() for o in outcomes]
    estate = Estate(folder, settings, ctx, names)
    missing = [n for n in names if not estate.bundle(n).is_file()]
    assert not missing, f"no crls.zip in the stores of {missing}"
    return estate


def copy_bundles(estate: Estate, folder: Path) -> Path:
    """The current crls.zip of every node, as ``folder/FQDN/crls.zip`` (readable by
    nginx's workers, which drop root)."""
    for name in estate.nodes:
        (folder / name).mkdir(parents=True)
        shutil.copyfile(estate.bundle(name), folder / name / "crls.zip")
        os.chmod(folder / name, 0o755)
        os.chmod(folder / name / "crls.zip", 0o644)
    return folder


# ---------------------------------------------------------------- servers

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from the parent ids in /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # stat fields 14 and 15


@dataclass
class Server:
    label: str
    workers: int
    command: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen | None = None
    pids: list[int] = field(default_factory=list)

    def start(self, probe_path: str) -> None:
        self.process = subprocess.Popen(self.command, env=self.env, cwd=ROOT,
                                        stdout=self.log_path.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.label} exited at start:\n{self.log_tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", probe_path)
                status = connection.getresponse().status
                connection.close()
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{self.label} did not answer within 30 s:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.1)
        time.sleep(0.5)  # every worker up, not just the first
        self.pids = process_tree(self.process.pid)

    def cpu(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in self.pids}

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # uvicorn and nginx both stop on it
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])


def pkiq_server(estate: Estate, workers: int, port: int, logs: Path) -> Server:
    command = [sys.executable, "-m", "pkiq", "web", "--host", "127.0.0.1", "--port",
               str(port), "--workers", str(workers)]
    return Server("pkiq web", workers, command, estate.env(), logs / "pkiq.log", port)


def bare_server(bundles: Path, workers: int, port: int, logs: Path) -> Server:
    command = [sys.executable, "-m", "uvicorn", "bench.web_bare:app", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--no-access-log",
               "--no-server-header", "--timeout-keep-alive", "60", "--log-level", "warning"]
    env = {**os.environ, "PKIQ_BENCH_BARE_DIR": str(bundles)}
    return Server("bare Starlette", workers, command, env, logs / "bare.log", port)


NGINX_CONF = """\
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    keepalive_timeout 60;
    keepalive_requests 1000000;
    types {{ application/zip zip; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        add_header Cache-Control no-cache;
    }}
}}
"""


def nginx_server(bundles: Path, workers: int, port: int, logs: Path) -> Server | None:
    """nginx with its own ETags (mtime and size) and 304s over ``bundles`` served as
    ``/nodes/FQDN/crls.zip``; None when there is no nginx binary."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                       else None)
    if binary is None:
        return None
    folder = logs / f"nginx-{workers}"
    folder.mkdir(exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, dir=folder, port=port,
                                      root=bundles.parent))
    command = [binary, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf),
               "-g", "daemon off;"]
    return Server("nginx", workers, command, dict(os.environ), folder / "stdout.log", port)


# ---------------------------------------------------------------- load

def cpu_pressure_us() -> int | None:
    """Microseconds in which some runnable task waited for a CPU (PSI, /proc/pressure/cpu):
    over a run, the share of time the machine had more work than cores."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(line.rsplit("total=", 1)[1])


def percentile(ordered: list[int], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] / 1000


def latency(values: list[int]) -> dict:
    ordered = sorted(values)
    return {"count": len(ordered), "p50_ms": round(percentile(ordered, 0.50), 2),
            "p90_ms": round(percentile(ordered, 0.90), 2),
            "p99_ms": round(percentile(ordered, 0.99), 2),
            "max_ms": round(ordered[-1] / 1000, 2) if ordered else None}


def run_load(server: Server, node_names: list[str], pollers: int, *, rate: float,
             seconds: float, warmup: float, clients: int, label: str,
             change: Callable[[], dict] | None = None) -> dict:
    """One measured run of ``pollers`` pollers against ``server``, poller i asking for node
    i mod len(node_names)'s crls.zip."""
    children = []
    for index in range(clients):
        config = {"port": server.port, "nodes": node_names,
                  "pollers": list(range(index, pollers, clients)), "rate": rate,
                  "pollers_total": pollers, "seconds": seconds, "warmup": warmup,
                  "result_path": str(server.log_path.parent / f"load-{index}.json")}
        children.append(subprocess.Popen(
            [sys.executable, "-m", "bench.web_load", json.dumps(config)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for child in children:
        line = child.stdout.readline().strip()
        if line != "ready":
            for other in children:
                other.kill()
            raise SystemExit(f"load generator failed before the run ({line!r}); "
                             f"{server.label}:\n{server.log_tail()}")
    start = time.time() + 0.2
    for child in children:
        child.stdin.write(f"{start}\n")
        child.stdin.flush()
    measure_from = start + warmup
    time.sleep(max(0.0, measure_from - time.time()))
    cpu_before, machine, load_before = server.cpu(), MachineCpu(), loadavg()
    pressure_before, clock_before = cpu_pressure_us(), time.monotonic()
    changed = None
    if change is not None:
        time.sleep(seconds / 3)
        changed = change()
    time.sleep(max(0.0, measure_from + seconds - time.time()))
    cpu_after, busy = server.cpu(), machine.busy_percent()
    pressure_after, clock_after = cpu_pressure_us(), time.monotonic()
    waited = (round(100 * (pressure_after - pressure_before) / 1e6 / (clock_after - clock_before),
                    1) if pressure_before is not None and pressure_after is not None else None)
    outputs = []
    for index, child in enumerate(children):
        child.communicate(timeout=60)
        if child.returncode:
            raise SystemExit(f"load generator exited with {child.returncode}")
        result_path = server.log_path.parent / f"load-{index}.json"
        outputs.append(json.loads(result_path.read_text()))
        result_path.unlink()
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    lat: dict[str, list[int]] = {"304": [], "200": []}
    timeline: dict[int, list] = {}
    for out in outputs:
        for key, (count, oks, worst) in out["timeline"].items():
            slot = timeline.setdefault(int(key), [0, 0, 0])
            slot[0], slot[1], slot[2] = slot[0] + count, slot[1] + oks, max(slot[2], worst)
        for key, value in out["statuses"].items():
            statuses[key] = statuses.get(key, 0) + value
        for key, value in out["errors"].items():
            errors[key] = errors.get(key, 0) + value
        for key, values in out["latency_us"].items():
            lat[key] += values
    answered = sum(statuses.values())
    unexpected = {k: v for k, v in statuses.items() if k not in ("200", "304")}
    server_cpu = sum(cpu_after[p] - cpu_before.get(p, 0.0) for p in cpu_after)
    result = {
        "run": label, "server": server.label, "workers": server.workers,
        "offered_rps": rate or None, "seconds": seconds, "pollers": pollers,
        "clients": clients, "answered": answered,
        "rps": round(answered / seconds, 1),
        "statuses": statuses, "errors": {**errors, **{f"status {k}": v
                                                       for k, v in unexpected.items()}},
        "latency_all": latency(lat["304"] + lat["200"]),
        "latency_304": latency(lat["304"]), "latency_200": latency(lat["200"]),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_per_process_s": [round(cpu_after[p] - cpu_before.get(p, 0.0), 3)
                                     for p in sorted(cpu_after)],
        "server_cpu_ms_per_request": round(1000 * server_cpu / answered, 4) if answered
        else None,
        "server_cores_busy": round(server_cpu / seconds, 2),
        "client_cpu_s": round(sum(o["cpu_s"] for o in outputs), 3),
        "client_late_sends": sum(o["late_sends"] for o in outputs),
        "client_max_lag_ms": max(o["max_lag_ms"] for o in outputs),
        "sends_behind_schedule": sum(o["sends_behind_schedule"] for o in outputs),
        "machine_busy_percent": busy, "cpu_pressure_some_percent": waited,
        "loadavg": [load_before, loadavg()],
        "bundles_changed": changed,
        "timeline_250ms": [[key / 4, *timeline[key]] for key in sorted(timeline)],
    }
    l304 = result["latency_304"]
    log(f"  {server.label} x{server.workers}, {label}: {result['rps']:,.0f} req/s, "
        f"304 p50 {l304['p50_ms']} p99 {l304['p99_ms']} max {l304['max_ms']} ms, "
        f"{statuses}, errors {result['errors'] or 0}, server "
        f"{result['server_cpu_ms_per_request']} CPU ms/req ({result['server_cores_busy']} "
        f"cores), client {result['client_cpu_s'] / seconds:.2f} cores")
    return result


# ---------------------------------------------------------------- report

def kept_up(run: dict) -> bool:
    return (not run["errors"] and run["rps"] >= KEPT_UP * run["offered_rps"]
            and run["latency_304"]["p99_ms"] < GOAL_P99_MS)


def find(runs: list[dict], server: str, workers: int, label: str) -> dict | None:
    return next((r for r in runs if r["server"] == server and r["workers"] == workers
                 and r["run"] == label), None)


def summarise(report: dict) -> dict:
    runs = report["runs"]
    out: dict = {"per_workers": {}}
    for workers in report["args"]["workers"]:
        paced = find(runs, "pkiq web", workers, "paced")
        sat = find(runs, "pkiq web", workers, "saturation")
        row = {"paced_kept_up_p99_under_50ms": kept_up(paced),
               "paced_rps": paced["rps"], "paced_p99_304_ms": paced["latency_304"]["p99_ms"],
               "saturation_rps": sat["rps"],
               "cpu_ms_per_304": paced["server_cpu_ms_per_request"]}
        changed = find(runs, "pkiq web", workers, "changed")
        if changed is not None:
            row["changed"] = {"200s": changed["statuses"].get("200", 0), "rps": changed["rps"],
                              "p99_304_ms": changed["latency_304"]["p99_ms"],
                              "p99_200_ms": changed["latency_200"]["p99_ms"],
                              "max_ms": changed["latency_all"]["max_ms"],
                              "republish_s": changed["bundles_changed"]["seconds"]}
        for other, key in (("bare Starlette", "bare"), ("nginx", "nginx")):
            other_sat = find(runs, other, workers, "saturation")
            other_paced = find(runs, other, workers, "paced")
            if other_sat is None:
                continue
            row[f"saturation_rps_vs_{key}"] = round(sat["rps"] / other_sat["rps"], 3)
            row[f"cpu_per_request_vs_{key}"] = round(
                paced["server_cpu_ms_per_request"] / other_paced["server_cpu_ms_per_request"],
                2)
        out["per_workers"][str(workers)] = row
    met = [w for w, row in out["per_workers"].items() if row["paced_kept_up_p99_under_50ms"]
           and row["saturation_rps"] >= GOAL_RATE]
    out["goal"] = (f">= {GOAL_RATE:,.0f} req/s with p99 < {GOAL_P99_MS:.0f} ms for 304s")
    out["goal_met"] = bool(met)
    out["goal_met_with_workers"] = [int(w) for w in met]
    return out


def render(report: dict) -> str:
    rows = [f"pkiq web: {report['args']['pollers']:,} keep-alive pollers over "
            f"{report['args']['nodes']} nodes' /nodes/FQDN/crls.zip "
            f"({report['bundle_bytes']:,} bytes each), {report['args']['seconds']} s "
            f"measured per run; {report['date']}, commit {report['commit']}, load "
            f"{report['loadavg_start']} -> {report['loadavg_end']}",
            "",
            f"{'server':<15} {'w':>1} {'run':<10} {'offered':>7} {'req/s':>7} {'304':>7} "
            f"{'200':>5} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'p99 304':>7} {'CPU ms/req':>10} {'srv cores':>9} {'cli cores':>9} "
            f"{'cli lag':>7} {'box%':>4} {'psi%':>4}",
            "-" * 145]
    for r in report["runs"]:
        rows.append(
            f"{r['server']:<15} {r['workers']:>1} {r['run']:<10} "
            f"{r['offered_rps'] or 'max':>7} {r['rps']:>7,.0f} "
            f"{r['statuses'].get('304', 0):>7} {r['statuses'].get('200', 0):>5} "
            f"{sum(r['errors'].values()):>4} {r['latency_all']['p50_ms']:>7.2f} "
            f"{r['latency_all']['p99_ms']:>7.2f} {r['latency_all']['max_ms']:>7.1f} "
            f"{r['latency_304']['p99_ms']:>7.2f} {r['server_cpu_ms_per_request']:>10.3f} "
            f"{r['server_cores_busy']:>9.2f} {r['client_cpu_s'] / r['seconds']:>9.2f} "
            f"{r['client_max_lag_ms']:>7.0f} {r['machine_busy_percent'] or 0:>4.0f} "
            f"{r['cpu_pressure_some_percent'] or 0:>4.0f}")
    summary = report["summary"]
    rows += ["", "latency: send to last byte, client side; CPU ms/req: the server's CPU time "
             "(all its processes) per answer; cli lag: the load generator's worst lateness "
             "(a busy client adds it to latency); box%: whole-machine CPU use; psi%: time "
             "some task waited for a CPU (/proc/pressure/cpu)"]
    rows.append("")
    for workers, row in summary["per_workers"].items():
        verdict = "kept up" if row["paced_kept_up_p99_under_50ms"] else "did NOT keep up"
        line = (f"pkiq, {workers} worker(s): paced {row['paced_rps']:,.0f} req/s, 304 p99 "
                f"{row['paced_p99_304_ms']} ms ({verdict}); saturation "
                f"{row['saturation_rps']:,.0f} req/s")
        for key in ("bare", "nginx"):
            if f"saturation_rps_vs_{key}" in row:
                line += (f"; vs {key}: {row[f'saturation_rps_vs_{key}']}x the req/s, "
                         f"{row[f'cpu_per_request_vs_{key}']}x the CPU per 304")
        rows.append(line)
        if "changed" in row:
            changed = row["changed"]
            rows.append(f"  while every bundle changed (new CRL, {changed['republish_s']} s to "
                        f"republish {report['args']['nodes']} stores): {changed['200s']} 200s, "
                        f"p99 {changed['p99_200_ms']} ms (200s) and {changed['p99_304_ms']} "
                        f"ms (304s), worst {changed['max_ms']} ms, {changed['rps']:,.0f} req/s")
    if report.get("nginx_missing"):
        rows.append("nginx: not installed (apt-get install -y nginx-light); no yardstick (b)")
    rows.append(f"goal '{summary['goal']}': "
                f"{'MET' if summary['goal_met'] else 'NOT MET'}"
                + (f" (workers {summary['goal_met_with_workers']})"
                   if summary["goal_met"] else ""))
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=1000, help="keep-alive pollers")
    parser.add_argument("--nodes", type=int, default=20, help="nodes whose bundles they poll")
    parser.add_argument("--rate", type=float, default=GOAL_RATE,
                        help="offered requests/s of the paced runs (default 2,000)")
    parser.add_argument("--workers", help="pkiq web --workers values (default 1,2; quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per run "
                        "(default 10; quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds before (default 2; quick 1)")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--no-yardsticks", action="store_true",
                        help="pkiq only: no bare Starlette app, no nginx")
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 1 min)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, _unknown = parser.parse_known_args(argv)  # bench/run passes every option on
    args.workers = [int(w) for w in (args.workers or ("1" if args.quick else "1,2")).split(",")]
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu, load_start = MachineCpu(), loadavg()
    started = time.time()
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    log(f"{date}, commit {commit}, load average {load_start}")
    runs: list[dict] = []
    nginx_missing = False
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-web-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # nginx's workers (not root) read the copies under it
        log(f"estate: CA {CA_NAME} and its CRL, {args.nodes} nodes, stores published ...")
        estate = build_estate(folder, args.nodes)
        bundles = copy_bundles(estate, folder / "www" / "nodes")
        bundle_bytes = estate.bundle(estate.nodes[0]).stat().st_size
        logs = folder / "logs"
        logs.mkdir()
        load = {"seconds": args.seconds, "warmup": args.warmup, "clients": args.clients}
        target = (estate.nodes, args.pollers)
        try:
            for workers in args.workers:
                servers = [pkiq_server(estate, workers, free_port(), logs)]
                if not args.no_yardsticks:
                    servers.append(bare_server(bundles, workers, free_port(), logs))
                    nginx = nginx_server(bundles, workers, free_port(), logs)
                    nginx_missing = nginx is None
                    servers += [nginx] if nginx else []
                for server in servers:
                    log(f"{server.label}, {workers} worker(s), port {server.port} ...")
                    server.start(f"/nodes/{estate.nodes[0]}/crls.zip")
                    try:
                        runs.append(run_load(server, *target, rate=args.rate, label="paced",
                                             **load))
                        runs.append(run_load(server, *target, rate=0, label="saturation",
                                             **load))
                        if server.label == "pkiq web":
                            runs.append(run_load(server, *target, rate=args.rate,
                                                 label="changed",
                                                 change=estate.new_crl_everywhere, **load))
                    finally:
                        server.stop()
        finally:
            estate.ctx.close()
    report = {"benchmark": "web", "machine": machine_facts(), "method": __doc__,
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "date": date, "commit": commit, "bundle_bytes": bundle_bytes,
              "nginx_missing": nginx_missing, "runs": runs,
              "loadavg_start": load_start, "loadavg_end": loadavg(),
              "machine_busy_percent": cpu.busy_percent(),
              "wall_seconds": round(time.time() - started, 1)}
    report["summary"] = summarise(report)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = args.results_dir / f"web-{date.replace(':', '').replace('-', '')}{suffix}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if report["summary"]["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
