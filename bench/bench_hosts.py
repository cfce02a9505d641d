"""Many hosts: signing workers on hosts of their own, sharing one PostgreSQL and one Redis.

Each worker host is a network namespace the benchmark makes on this machine (``ip netns``,
a veth pair on a bridge, 10.77.0.0/24): its own address, node name (``w@hostK``) and
``PKIQ_DATA_DIR``, reaching PostgreSQL and Redis over the bridge at 10.77.0.1 as a worker on
another machine reaches them over the network. The machine's servers listen on loopback
only, so a ``socat`` forwarder per service relays from the bridge address to them (its CPU
is counted apart, as the network's share). For each host count H, a fresh schema, queue and
CA; every host runs ``pkiq worker -c C``; N jobs are written first, unannounced, then
announced at once (so no submitter shares the cores), and the run measures:

- certs/s, N over (last ``finished_at`` - first announce);
- CPU per job of the workers, PostgreSQL, Redis, the forwarders and the rest (from
  /proc/PID/stat), and the machine's busy share: what saturates first;
- PostgreSQL's transactions per job (``pg_stat_database.xact_commit``) and its CPU per job,
  the figures that say how many worker hosts one primary can feed (docs/benchmarks.md).

Needs root (``ip netns``), ``socat`` and iproute2; PostgreSQL and Redis on 127.0.0.1.

    bench/run hosts [--quick] [--hosts 1,2,4] [--concurrency 1] [--key-type rsa4096]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from sqlalchemy import text

from bench.bench_queue import (
    DEFAULT_REDIS_URL,
    KEY_LABEL,
    PASSPHRASE,
    WARMUP_JOBS,
    Workers,
    create_ca,
    estate_env,
    run_drain,
    warm_up,
)
from bench.bench_sign import (
    DEFAULT_POSTGRES_URL,
    RESULTS_DIR,
    ROOT,
    Backend,
    loadavg,
    log,
    machine_facts,
    make_csrs,
    make_request_keys,
    postgres_facts,
)
from pkiq.cli_common import make_context
from shell.settings import Settings

BRIDGE, BRIDGE_ADDRESS, PREFIX = "pkiqhb0", "10.77.0.1", "10.77.0"
NAMESPACE = "pkiq-host{}"
REQUEST_KEYS = 4


# ---------------------------------------------------------------- the network

def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Network:
    """A bridge at 10.77.0.1 and ``count`` namespaces hanging off it, each with one veth
    (10.77.0.11, .12, ...), loopback up and a default route over the bridge; forwarders on
    the bridge address to PostgreSQL and Redis on loopback. Taken down on exit, and any
    left by an earlier run that died is taken down first."""

    def __init__(self, count: int, forward: dict[int, int]):
        self.count, self.forward = count, forward
        self.forwarders: list[subprocess.Popen] = []

    def __enter__(self) -> Network:
        self.down()
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for k in range(self.count):
            ns, outer, inner = NAMESPACE.format(k), f"pkiqh{k}a", f"pkiqh{k}b"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", outer, "master", BRIDGE)
            _ip("link", "set", outer, "up")
            _ip("link", "set", inner, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{PREFIX}.{11 + k}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", BRIDGE_ADDRESS)
        for port, target in self.forward.items():
            self.forwarders.append(subprocess.Popen(
                ["socat", f"TCP-LISTEN:{port},bind={BRIDGE_ADDRESS},fork,reuseaddr,nodelay",
                 f"TCP:127.0.0.1:{target},nodelay"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.forwarders:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.down()

    def down(self) -> None:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith("pkiq-host"):
                _ip("netns", "del", name, check=False)
        _ip("link", "del", BRIDGE, check=False)


def usable() -> str | None:
    """Why this benchmark cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    for tool in ("ip", "socat"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


# ---------------------------------------------------------------- workers on hosts

class HostWorkers(Workers):
    """One ``pkiq worker -c C`` per host: inside its namespace, with its own node name,
    data directory and the bridge address for PostgreSQL and Redis."""

    def __init__(self, env: dict, folder: Path, hosts: int, concurrency: int):
        super().__init__(env, folder, hosts)
        self.concurrency = concurrency

    def command(self, k: int) -> tuple[list[str], dict]:
        return (["ip", "netns", "exec", NAMESPACE.format(k), sys.executable, "-m", "pkiq",
                 "worker", "-c", str(self.concurrency), "-n", f"w@host{k}"],
                dict(self.env, PKIQ_DATA_DIR=str(self.folder / f"host{k}")))


def _over_bridge(url: str) -> str:
    return url.replace("127.0.0.1", BRIDGE_ADDRESS).replace("localhost", BRIDGE_ADDRESS)


def _commits(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(text("select xact_commit from pg_stat_database "
                                "where datname = current_database()"))


def run_hosts(args, hosts: int, csrs: list[bytes], warmup: list[bytes], workdir: Path) -> dict:
    label = f"{args.key_type}-{hosts}h"
    folder = workdir / label
    folder.mkdir()
    queue = f"pkiq-bench-{secrets.token_hex(4)}"
    log(f"{hosts} host(s) x {args.concurrency}: schema, queue {queue}, pkiq ca create ...")
    with Backend("postgresql", args.postgres_url).database(workdir, f"h-{label}") as engine:
        db_url = engine.url.render_as_string(hide_password=False)
        env = estate_env(db_url, args.redis_url, queue, folder / "data")
        create_ca(env, args.key_type, f"hosts benchmark {KEY_LABEL[args.key_type]}")
        app = make_context(Settings(data_dir=folder / "data", database_url=db_url,
                                    broker_url=args.redis_url, queue=queue,
                                    ca_passphrase=PASSPHRASE))
        host_env = dict(env, PKIQ_DATABASE_URL=_over_bridge(db_url),
                        PKIQ_BROKER_URL=_over_bridge(args.redis_url))
        workers = HostWorkers(host_env, folder, hosts, args.concurrency)
        try:
            ready = workers.start()
            log(f"  {hosts} host(s) ready after {ready:.1f}s; warming up ...")
            warm_up(app, engine, workers, warmup)
            commits = _commits(engine)
            drained = run_drain(app, engine, workers, csrs)
            commits = _commits(engine) - commits
            if not workers.alive():
                raise RuntimeError("a worker host died during the run")
        finally:
            workers.stop()
            app.close()
            client = redis.Redis.from_url(args.redis_url)
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
            client.close()
    cpu = drained["process_cpu_seconds"]
    forwarders = cpu["other_by_name"].get("socat", 0.0)
    count = len(csrs)
    return {"hosts": hosts, "concurrency": args.concurrency, "key_type": args.key_type,
            "queue": queue, "drain": drained, "certs_per_s": drained["certs_per_s"],
            "postgresql_commits_per_job": round(commits / count, 2),
            "cpu_ms_per_job": {
                "workers": round(cpu["workers"] / count * 1e3, 3),
                "postgresql": round(cpu["postgresql"] / count * 1e3, 3),
                "redis": round(cpu["redis"] / count * 1e3, 3),
                "forwarders": round(forwarders / count * 1e3, 3),
                "other": round((cpu["other"] - forwarders) / count * 1e3, 3),
                "submitter": round(cpu["submitter"] / count * 1e3, 3)},
            "machine_cpu_busy_percent": drained["machine_cpu_busy_percent"]}


# ---------------------------------------------------------------- report

def render(report: dict) -> str:
    lines = [f"pkiq worker hosts - {report['date']}, commit {report['commit']}, load "
             f"{report['loadavg_start']} -> {report['loadavg_end']}",
             f"{report['jobs']} pre-queued {KEY_LABEL[report['key_type']]} jobs per run, hosts "
             f"as network namespaces over a bridge, pkiq worker -c {report['concurrency']} each, "
             "PostgreSQL and Redis through socat on the bridge address", ""]
    head = (f"{'hosts':>5} {'certs/s':>8} {'box%':>5}  CPU ms/job: {'workers':>7} "
            f"{'postgres':>8} {'redis':>6} {'socat':>6} {'other':>6}  {'PG tx/job':>9}")
    lines += [head, "-" * len(head)]
    for run in report["runs"]:
        c = run["cpu_ms_per_job"]
        lines.append(f"{run['hosts']:>5} {run['certs_per_s']:>8.1f} "
                     f"{run['machine_cpu_busy_percent'] or 0:>5.0f}  {'':>11}{c['workers']:>7.2f} "
                     f"{c['postgresql']:>8.3f} {c['redis']:>6.3f} {c['forwarders']:>6.3f} "
                     f"{c['other']:>6.3f}  {run['postgresql_commits_per_job']:>9.2f}")
    lines.append("  box%: the machine's CPU busy during the run, as a share of all its cores "
                 "(100 = saturated); socat: the forwarders, the network's share;")
    lines.append("  PG tx/job: PostgreSQL commits per job (pg_stat_database.xact_commit)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run hosts", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--hosts", default="1,2,4", help="host counts (default 1,2,4)")
    parser.add_argument("--concurrency", type=int, default=1, help="pkiq worker -c per host")
    parser.add_argument("--count", type=int, help="jobs per run (default 3000; --quick 200)")
    parser.add_argument("--key-type", default="rsa4096", choices=sorted(KEY_LABEL))
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--postgres", action="store_true", help="accepted; always PostgreSQL")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, _others = parser.parse_known_args(argv)  # bench/run passes every option on
    args.count = args.count or (200 if args.quick else 3000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    why = usable()
    if why:
        print(f"bench/run hosts: {why}", file=sys.stderr)
        return 2
    counts = [int(x) for x in args.hosts.split(",") if x.strip()]
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    load_start = loadavg()
    log(f"{date}, commit {commit}, load average {load_start}; making CSRs (untimed) ...")
    keys = make_request_keys("ec-p256", REQUEST_KEYS)
    pg_port = int(args.postgres_url.rsplit(":", 1)[1].split("/")[0]) \
        if args.postgres_url.count(":") >= 2 else 5432
    redis_port = int(args.redis_url.rsplit(":", 1)[1].split("/")[0])
    runs = []
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-hosts-") as tmp, \
            Network(max(counts), {pg_port: pg_port, redis_port: redis_port}):
        for hosts in counts:
            csrs = make_csrs(args.count, keys, prefix=f"h{hosts}")
            warmup = make_csrs(WARMUP_JOBS * hosts, keys, prefix=f"w{hosts}")
            runs.append(run_hosts(args, hosts, csrs, warmup, Path(tmp)))
    report = {"benchmark": "hosts", "date": date, "commit": commit, "method": __doc__,
              "machine": machine_facts(), "postgresql": postgres_facts(args.postgres_url),
              "key_type": args.key_type, "concurrency": args.concurrency, "jobs": args.count,
              "runs": runs, "loadavg_start": load_start, "loadavg_end": loadavg()}
    table = render(report)
    print(table)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = date.replace("-", "").replace(":", "")
    path = args.results_dir / f"hosts-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
