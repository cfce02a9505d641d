"""CRL refresh benchmark: pkiq's refresh beside ``fetch-crl`` and ``openssl crl -verify``.

Measures, in one run, against one local HTTP server that runs in a process of its own (so
its CPU is charged to neither tool, and both tools face the same server):

(a) A world of ``--points`` distribution points (default 1,000) on 127.0.0.1: as many
    distinct EC P-256 CAs, each with one CRL, mostly a few entries and 1% with
    ``--big-share-entries`` (10,000). pkiq refreshes it with ``scheduler.refresh.refresh``
    in this process (a fresh SQLite database; PostgreSQL too with ``--postgres``) and with
    ``pkiq crl refresh`` as a command (start-up included): the first fetch into an empty
    database, a refresh where every answer is 304 Not Modified, and a refresh where every
    CA has published a new CRL.
(b) One CRL with ``--big-entries`` entries (default 1,000,000) served as DER and as gzip:
    pkiq's fetch + decode + validate + install (one refresh, one distribution point) in a
    child process, wall time and peak RSS, beside ``openssl crl -inform DER -noout -CAfile
    CA -verify`` on the same DER file in the same run.
(c) The same world as (a) refreshed by ``fetch-crl`` (the Debian package), with pkiq's
    parallelism and with its own default, from empty directories, unchanged, and changed.
(d) Hostile points at default settings (16 at once, 64 MiB each): 16 endless bodies, a
    2 MiB zip bomb, a gzip bomb, and 60 MiB of junk as DER, as PEM and as gzipped PEM,
    served by a process of their own (``python -m tests.hostile``); the peak RSS of a
    refresh of them all in a child process, beside the 200 MB goal.

Run through ``bench/run crl``; results go to ``bench/results/crl-<time>.json`` and to stdout
as a table, progress to stderr.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import datetime as dt
import email.utils
import gzip
import hashlib
import http.client
import io
import json
import os
import pstats
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bench.bench_sign import (
    DEFAULT_POSTGRES_URL,
    RESULTS_DIR,
    ROOT,
    Backend,
    MachineCpu,
    loadavg,
    log,
    machine_facts,
    postgres_facts,
    run_text,
)
from bench.crl_child import PHASES, rusage_cpu, vm_hwm_bytes

GOAL_SPEEDUP = 5.0  # (a) pkiq >= 5x faster than fetch-crl on the same world
GOAL_304_SECONDS = 3.0  # (a) an all-304 refresh under 3 s
GOAL_BIG_TIME = 2.0  # (b) <= 2x openssl's time
GOAL_RSS_FACTOR, GOAL_RSS_EXTRA = 3, 100 * 10**6  # (b) peak RSS <= 3x DER size + 100 MB (10**6)
# Issue 10, item 3: (b) <= 1.2x openssl's time with peak RSS <= DER size + 100 MB; (d) any
# set of hostile points at default settings keeps the refresh under 200 MB of peak RSS.
GOAL2_BIG_TIME, GOAL2_RSS_FACTOR = 1.2, 1
GOAL_HOSTILE_RSS = 200 * 10**6
PARALLELISM = 16  # pkiq's default (ca.crl_config.DEFAULTS)
SERVER_HOST = "127.0.0.1"
FETCH_CRL_INSTALL = "apt-get update && apt-get install -y fetch-crl"
CHILD_TIMEOUT = 1800  # seconds, for any one child process


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> dict:
    return {"median": round(median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "all": [round(v, 3) for v in values]}


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process (all its threads), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


GNU_TIME = Path("/usr/bin/time")


@dataclass
class ChildRun:
    """A finished child process: its wall time as seen from here, and the CPU time and peak
    RSS of it and of its waited-for descendants (fetch-crl's workers and openssl runs)."""

    returncode: int
    seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    stdout: str
    stderr: str


def run_child(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None,
              timeout: float = CHILD_TIMEOUT) -> ChildRun:
    """Run ``cmd`` to its end under GNU time (``/usr/bin/time -f '%U %S %M'``).

    Why not ``os.wait4`` here: Linux carries a process's RSS high-water mark across exec,
    so a child forked from this benchmark (some 100 MB, the world in memory) would report at
    least that much, however small it is. GNU time is a 2 MB process; what it forks starts
    from that."""
    if not GNU_TIME.exists():
        raise RuntimeError(f"{GNU_TIME} is required (peak RSS and CPU of child processes): "
                           "apt-get install -y time")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as usage:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(GNU_TIME), "-f", "%U %S %M", "-o", usage.name, *cmd],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"{cmd[0]} did not finish within {timeout:g} s; killed") from None
        seconds = time.perf_counter() - t0
        user, system, rss_kb = usage.read().split()[-3:]  # after "Command exited with ..."
        out.seek(0)
        err.seek(0)
        return ChildRun(proc.returncode, seconds, float(user) + float(system),
                        int(rss_kb) * 1024, out.read().decode(errors="replace"),
                        err.read().decode(errors="replace"))


# ---------------------------------------------------------------- the world

@dataclass
class World:
    """The CRLs on disk, as the server serves them and as the tools are set up."""

    root: Path
    names: list[str]  # anchor names, ca0000 ...
    ca_pems: list[bytes]
    entries: list[int]  # per CA, generation 1 (generation 2 has one more)
    sha256: dict[int, set[str]]  # generation -> the DER CRLs' SHA-256 values
    bytes_total: dict[int, int]  # generation -> the sum of the DER sizes
    big_entries: int
    big_der: Path
    big_gz: Path
    big_ca_pem: Path
    manifest: Path


def build_world(workdir: Path, points: int, share_entries: int, big_entries: int,
                seed: int) -> World:
    """CAs, two generations of their CRLs and the big CRL, written under ``workdir/www``.
    Generation 2 is every CA's next CRL (number + 1, one more entry, a later thisUpdate)."""
    from tests import crlfactory as cf  # fast signed CRLs of any size

    rng = random.Random(seed)
    now = now_utc().replace(microsecond=0)
    next_update = now + dt.timedelta(days=7)
    this_update = {1: now - dt.timedelta(hours=2), 2: now - dt.timedelta(hours=1)}
    www = workdir / "www"
    big_count = max(1, points // 100)
    big_at = {round((k + 0.5) * points / big_count) for k in range(big_count)}
    names, pems, entries = [], [], []
    sha: dict[int, set[str]] = {1: set(), 2: set()}
    total = {1: 0, 2: 0}
    routes: dict[str, dict[str, str]] = {"1": {}, "2": {}}
    for generation in (1, 2):
        (www / f"g{generation}").mkdir(parents=True)
    for i in range(points):
        name = f"ca{i:04d}"
        issuer = cf.issuer(f"pkiq bench CA {i:04d}")
        count = share_entries if i in big_at else rng.randint(0, 20)
        names.append(name)
        pems.append(issuer.cert_pem)
        entries.append(count)
        for generation in (1, 2):
            der = cf.crl_der(count + generation - 1, number=generation, ca=issuer,
                             this_update=this_update[generation], next_update=next_update)
            path = www / f"g{generation}" / f"{name}.crl"
            path.write_bytes(der)
            sha[generation].add(hashlib.sha256(der).hexdigest())
            total[generation] += len(der)
            routes[str(generation)][f"/crl/{name}.crl"] = str(path)
    big_issuer = cf.issuer("pkiq bench big CA")
    big = cf.crl_der(big_entries, number=1, ca=big_issuer, this_update=this_update[2],
                     next_update=next_update)
    (www / "big").mkdir()
    big_der, big_gz = www / "big" / "big.crl", www / "big" / "big.crl.gz"
    big_der.write_bytes(big)
    big_gz.write_bytes(gzip.compress(big, compresslevel=6, mtime=0))
    big_ca = www / "big" / "ca.pem"
    big_ca.write_bytes(big_issuer.cert_pem)
    manifest = www / "manifest.json"
    manifest.write_text(json.dumps({
        "generations": routes,
        "static": {"/big/big.crl": str(big_der), "/big/big.crl.gz": str(big_gz)},
        "last_modified": {str(g): email.utils.format_datetime(t, usegmt=True)
                          for g, t in this_update.items()}}))
    return World(www, names, pems, entries, sha, total, big_entries, big_der, big_gz, big_ca,
                 manifest)


# ---------------------------------------------------------------- the server process

class _Content:
    """What the server process serves: the generation in force, validators, and counters of
    what was asked (method, status, which conditional header) for the report."""

    def __init__(self, manifest: Path):
        spec = json.loads(manifest.read_text())
        self.generations = {int(g): {path: self._item(Path(file).read_bytes(),
                                                      spec["last_modified"][g])
                                     for path, file in routes.items()}
                            for g, routes in spec["generations"].items()}
        self.static = {path: self._item(Path(file).read_bytes(), spec["last_modified"]["1"])
                       for path, file in spec["static"].items()}
        self.generation = 1
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.connections = 0
        self.bytes_sent = 0

    @staticmethod
    def _item(body: bytes, last_modified: str) -> tuple[bytes, str, str, dt.datetime]:
        etag = '"' + hashlib.sha256(body).hexdigest()[:24] + '"'
        return body, etag, last_modified, email.utils.parsedate_to_datetime(last_modified)

    def find(self, path: str):
        return self.generations[self.generation].get(path) or self.static.get(path)

    def record(self, key: str, sent: int) -> None:
        with self.lock:
            self.counts[key] += 1
            self.bytes_sent += sent

    def stats(self, reset: bool) -> dict:
        with self.lock:
            info = {"requests": dict(sorted(self.counts.items())),
                    "connections": self.connections, "bytes_sent": self.bytes_sent,
                    "generation": self.generation}
            if reset:
                self.counts.clear()
                self.connections = self.bytes_sent = 0
        return info


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD of the world's CRLs. If-None-Match decides when sent, else
    If-Modified-Since (a date at or after Last-Modified) gets 304 (RFC 9110 13.1.3). No
    Cache-Control or Expires: a client's cache may not skip the request."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.content.lock:
            self.server.content.connections += 1
        super().setup()

    def do_GET(self) -> None:
        self._reply(send_body=True)

    def do_HEAD(self) -> None:
        self._reply(send_body=False)

    def _reply(self, send_body: bool) -> None:
        content = self.server.content
        parts = urlsplit(self.path)
        if parts.path.startswith("/_ctl/"):
            self._control(parts.path, parse_qs(parts.query))
            return
        item = content.find(parts.path)
        inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
        kind = "If-None-Match" if inm is not None else ("If-Modified-Since" if ims else "plain")
        if item is None:
            self._send(404, b"not found\n", {}, send_body)
            content.record(f"{self.command} 404 {kind}", 0)
            return
        body, etag, last_modified, modified_at = item
        validators = {"ETag": etag, "Last-Modified": last_modified}
        if inm is not None:
            fresh = etag in {tag.strip() for tag in inm.split(",")} or inm.strip() == "*"
        elif ims:
            try:
                fresh = email.utils.parsedate_to_datetime(ims) >= modified_at
            except (TypeError, ValueError):
                fresh = False
        else:
            fresh = False
        if fresh:
            self._send(304, b"", validators, False)
            content.record(f"{self.command} 304 {kind}", 0)
            return
        self._send(200, body, {**validators, "Content-Type": "application/pkix-crl"},
                   send_body)
        content.record(f"{self.command} 200 {kind}", len(body) if send_body else 0)

    def _send(self, status: int, body: bytes, headers: dict, send_body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def _control(self, path: str, query: dict) -> None:
        content = self.server.content
        if path == "/_ctl/generation":
            content.generation = int(query["n"][0])
            answer = {"generation": content.generation}
        elif path == "/_ctl/stats":
            answer = content.stats(reset="reset" in query)
        else:
            self._send(404, b"", {}, True)
            return
        self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"},
                   True)

    def log_message(self, format, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    content: _Content

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up early are not the benchmark's concern."""


def serve(manifest: Path) -> int:
    """The server process: load everything into memory, print the port, serve until killed."""
    server = _Server((SERVER_HOST, 0), _Handler)
    server.content = _Content(manifest)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0


class ServerProcess:
    """``python -m bench.bench_crl --serve MANIFEST`` as a child; its CPU read from /proc."""

    def __init__(self, manifest: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_crl", "--serve", str(manifest)], cwd=ROOT,
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            self.stop()
            raise RuntimeError("the benchmark's HTTP server did not start")
        self.port = int(line[1])

    def url(self, path: str) -> str:
        return f"http://{SERVER_HOST}:{self.port}{path}"

    def _get(self, path: str) -> dict:
        conn = http.client.HTTPConnection(SERVER_HOST, self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return json.loads(response.read())
        finally:
            conn.close()

    def generation(self, number: int) -> None:
        self._get(f"/_ctl/generation?n={number}")

    def stats(self) -> dict:
        """What was asked since the last call (counters are reset)."""
        return self._get("/_ctl/stats?reset=1")

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@contextlib.contextmanager
def measured(server: ServerProcess):
    """Wall time, this process's CPU, the server's CPU, machine load around a block."""
    facts: dict = {}
    server.stats()  # reset the counters
    cpu0, server0 = resource.getrusage(resource.RUSAGE_SELF), server.cpu_seconds()
    machine, load0 = MachineCpu(), loadavg()
    t0 = time.perf_counter()
    yield facts
    facts["seconds"] = time.perf_counter() - t0
    cpu1, server1 = resource.getrusage(resource.RUSAGE_SELF), server.cpu_seconds()
    facts["self_cpu_seconds"] = round(rusage_cpu(cpu1) - rusage_cpu(cpu0), 3)
    facts["server_cpu_seconds"] = (round(server1 - server0, 3)
                                   if server0 is not None and server1 is not None else None)
    facts["machine_cpu_busy_percent"] = machine.busy_percent()
    facts["loadavg_start"], facts["loadavg_end"] = load0, loadavg()
    facts["server"] = server.stats()


# ---------------------------------------------------------------- pkiq, in this process

def pkiq_setup(sessions, ca_pems: list[bytes], urls: list[str], parallelism: int) -> None:
    from ca import crl_config, trust
    from shell.db import transaction

    now = now_utc()
    with transaction(sessions) as session:
        for start in range(0, len(ca_pems), 500):  # trust.MAX_BUNDLE_CERTS is 1,000
            trust.add(session, b"".join(ca_pems[start:start + 500]), now)
        crl_config.update_settings(session, now, parallelism=parallelism, timeout_seconds=60)
        crl_config.add_points(session, urls, now)


def check_summary(summary: dict, expected: str, points: int, what: str) -> None:
    """A run counts only if every distribution point ended as expected."""
    if summary.get("failed") or summary.get(expected) != points:
        raise RuntimeError(f"{what}: expected {points} x {expected}, got {summary}")


def profiled(call, label: str, sink: dict) -> None:
    """``call()`` under cProfile (the calling thread only), the top functions kept."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        call()
    finally:
        profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(30)
    sink[label] = text.getvalue()


SCENARIOS = (("first", 1, "installed"), ("unchanged", 1, "not_modified"),
             ("changed", 2, "installed"))


def pkiq_in_process(backend: Backend, world: World, server: ServerProcess, workdir: Path,
                    label: str, parallelism: int, profile: dict | None) -> dict:
    """The three scenarios against a fresh database, with ``refresh()`` called here."""
    from scheduler.refresh import refresh
    from shell.db import session_factory

    urls = [server.url(f"/crl/{name}.crl") for name in world.names]
    out: dict = {}
    with backend.database(workdir, label) as engine:
        sessions = session_factory(engine)
        pkiq_setup(sessions, world.ca_pems, urls, parallelism)
        for scenario, generation, expected in SCENARIOS:
            server.generation(generation)
            with measured(server) as facts:
                report = refresh(sessions, now_utc, trigger="manual")
            check_summary(report.summary(), expected, len(urls), f"pkiq {label} {scenario}")
            facts["summary"] = report.summary()
            out[scenario] = facts
            log(f"  pkiq refresh() {backend.name} {scenario}: {facts['seconds']:.2f} s "
                f"(CPU {facts['self_cpu_seconds']:.2f} s here, "
                f"{facts['server_cpu_seconds']} s server)")
        if profile is not None:  # after the timed runs: an untimed, profiled 304 refresh
            server.generation(2)
            profiled(lambda: refresh(sessions, now_utc, trigger="manual"),
                     f"{backend.name} unchanged refresh()", profile)
    server.generation(1)
    return out


# ---------------------------------------------------------------- pkiq, as a command

def pkiq_command() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "pkiq"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pkiq"]


def pkiq_cli(world: World, server: ServerProcess, workdir: Path, label: str,
             parallelism: int) -> dict:
    """``pkiq trust add``, ``crl dp set``, ``crl settings`` (untimed), then ``pkiq crl
    refresh --json`` timed as a process for each scenario. SQLite, a fresh file."""
    folder = workdir / label
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKIQ_")}
    env.update(PKIQ_DATA_DIR=str(folder / "data"),
               PKIQ_DATABASE_URL=f"sqlite:///{folder / 'pkiq.db'}")
    pkiq = pkiq_command()
    urls = folder / "urls.txt"
    urls.write_text("".join(server.url(f"/crl/{name}.crl") + "\n" for name in world.names))
    setup = []
    for start in range(0, len(world.ca_pems), 1000):
        bundle = folder / f"trust-{start}.pem"
        bundle.write_bytes(b"".join(world.ca_pems[start:start + 1000]))
        setup.append([*pkiq, "trust", "add", str(bundle)])
    setup += [[*pkiq, "crl", "dp", "set", str(urls)],
              [*pkiq, "crl", "settings", "--parallel", str(parallelism), "--timeout", "60"]]
    for cmd in setup:
        done = run_child(cmd, env=env)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd[-3:])} failed: {done.stderr.strip()}")
    out: dict = {}
    for scenario, generation, expected in SCENARIOS:
        server.generation(generation)
        with measured(server) as facts:
            done = run_child([*pkiq, "crl", "refresh", "--json"], env=env)
        if done.returncode:
            raise RuntimeError(f"pkiq crl refresh exited {done.returncode}: "
                               f"{done.stderr.strip()[-500:]}")
        summary = json.loads(done.stdout)["summary"]
        check_summary(summary, expected, len(world.names), f"pkiq crl refresh {scenario}")
        facts.update(seconds=done.seconds, process_cpu_seconds=round(done.cpu_seconds, 3),
                     max_rss_mb=round(done.max_rss_bytes / 2**20, 1), summary=summary)
        out[scenario] = facts
        log(f"  pkiq crl refresh {scenario}: {done.seconds:.2f} s (CPU "
            f"{done.cpu_seconds:.2f} s, server {facts['server_cpu_seconds']} s)")
    server.generation(1)
    return out


def pkiq_startup(workdir: Path, runs: int) -> dict:
    """A command that only reads the settings: interpreter, imports, schema check."""
    folder = workdir / "startup"
    folder.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKIQ_")}
    env.update(PKIQ_DATA_DIR=str(folder), PKIQ_DATABASE_URL=f"sqlite:///{folder / 'p.db'}")
    cmd = [*pkiq_command(), "crl", "settings", "--json"]
    run_child(cmd, env=env)  # creates and migrates the database: not timed
    times = [run_child(cmd, env=env).seconds for _ in range(runs)]
    return {"command": "pkiq crl settings --json", **spread(times)}


# ---------------------------------------------------------------- fetch-crl

def fetch_crl_version() -> str | None:
    path = shutil.which("fetch-crl") or ("/usr/sbin/fetch-crl"
                                         if Path("/usr/sbin/fetch-crl").exists() else None)
    if path is None:
        return None
    text = run_text(path, "-V") or ""
    package = run_text("dpkg-query", "-W", "-f", "${Version}", "fetch-crl")
    return f"{path} {text.strip()}" + (f" (Debian package {package})" if package else "")


def fetch_crl_tree(world: World, server: ServerProcess, workdir: Path) -> tuple[Path, Path]:
    """The layout fetch-crl reads: ``<anchor>.0`` (the CA, PEM) and ``<anchor>.crl_url``
    (its CRL URL) in one directory, and a configuration file of our own (so nothing from
    /etc/fetch-crl.conf applies)."""
    infodir = workdir / "fetch-crl" / "certificates"
    infodir.mkdir(parents=True)
    for name, pem in zip(world.names, world.ca_pems, strict=True):
        (infodir / f"{name}.0").write_bytes(pem)
        (infodir / f"{name}.crl_url").write_text(server.url(f"/crl/{name}.crl") + "\n")
    config = workdir / "fetch-crl" / "fetch-crl.conf"
    config.write_text("# pkiq benchmark: defaults except the paths given on the command line\n"
                      "httptimeout = 60\n")
    return infodir, config


def installed_by_fetch_crl(outdir: Path) -> tuple[int, set[str]]:
    """(number of ``*.r0`` files, SHA-256 set of the DER CRLs in them)."""
    files = sorted(outdir.glob("*.r0"))
    digests = set()
    for path in files:
        text = path.read_bytes()
        body = text.split(b"-----BEGIN X509 CRL-----", 1)[1].split(b"-----END", 1)[0]
        digests.add(hashlib.sha256(base64.b64decode(body)).hexdigest())
    return len(files), digests


def fetch_crl_runs(world: World, server: ServerProcess, workdir: Path, tree: tuple[Path, Path],
                   parallelism: int | None) -> dict:
    """From empty output and state directories: the first fetch, unchanged, changed. Each is
    checked: exit status 0 and exactly the served CRLs in the output directory."""
    infodir, config = tree
    tag = f"p{parallelism}" if parallelism else "default"
    outdir, statedir = workdir / "fetch-crl" / f"out-{tag}", workdir / "fetch-crl" / f"state-{tag}"
    outdir.mkdir()
    statedir.mkdir()
    cmd = ["fetch-crl", "-c", str(config), "-l", str(infodir), "-o", str(outdir),
           "-s", str(statedir), "--nosymlinks"]
    if parallelism:
        cmd += ["-p", str(parallelism)]
    out: dict = {"command": " ".join(cmd).replace(str(workdir), "$TMP")}
    for scenario, generation, _expected in SCENARIOS:
        server.generation(generation)
        started = time.time()
        with measured(server) as facts:
            done = run_child(cmd)
        files, digests = installed_by_fetch_crl(outdir)
        touched = sum(1 for p in outdir.glob("*.r0") if p.stat().st_mtime >= int(started))
        problem = None
        if done.returncode:
            problem = f"exit status {done.returncode}"
        elif digests != world.sha256[generation]:
            problem = (f"{len(digests & world.sha256[generation])} of "
                       f"{len(world.sha256[generation])} served CRLs installed")
        elif touched < files:
            problem = f"only {touched} output files written or touched in this run"
        facts.update(seconds=done.seconds, process_cpu_seconds=round(done.cpu_seconds, 3),
                     max_rss_mb=round(done.max_rss_bytes / 2**20, 1), exit_status=done.returncode,
                     output_files=files, distinct_crls_installed=len(digests),
                     files_touched=touched, output_tail=(done.stdout + done.stderr)[-600:])
        if problem:
            raise RuntimeError(f"fetch-crl {tag} {scenario}: {problem}; the run does not count."
                               f"\n{facts['output_tail']}")
        out[scenario] = facts
        log(f"  fetch-crl {tag} {scenario}: {done.seconds:.2f} s (CPU {done.cpu_seconds:.2f} s, "
            f"server {facts['server_cpu_seconds']} s), {len(digests)} CRLs in {files} files")
    server.generation(1)
    return out


# ---------------------------------------------------------------- (b) one big CRL

def big_setup(url: str, database_url: str, ca_pem: Path) -> int:
    """In a process of its own, before ``crl_child.big_child``: the database made and migrated, the
    CA trusted, the point added, so the measured process starts as a nightly run does,
    on a database that exists."""
    from shell.db import make_engine, migrate, session_factory

    engine = make_engine(database_url)
    migrate(engine)
    pkiq_setup(session_factory(engine), [ca_pem.read_bytes()], [url], PARALLELISM)
    engine.dispose()
    return 0


def big_pkiq_once(url: str, backend: Backend, world: World, workdir: Path, label: str,
                  profile_to: Path | None = None) -> dict:
    with contextlib.ExitStack() as stack:
        if backend.name == "sqlite":
            database_url = f"sqlite:///{workdir / (label + '.db')}"
        else:
            engine = stack.enter_context(backend.database(workdir, label))
            database_url = engine.url.render_as_string(hide_password=False)
        result = workdir / f"{label}.json"
        setup = run_child([sys.executable, "-m", "bench.bench_crl", "--big-setup", url,
                           database_url, str(world.big_ca_pem)], cwd=ROOT)
        if setup.returncode:
            raise RuntimeError(f"big CRL set-up failed: {setup.stderr.strip()[-800:]}")
        cmd = [sys.executable, "-m", "bench.crl_child", url, database_url,
               str(world.big_ca_pem), str(result)]
        if profile_to is not None:
            cmd.append(str(profile_to))
        done = run_child(cmd, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"big CRL child failed: {done.stderr.strip()[-800:]}")
        facts = json.loads(result.read_text())
        if backend.name == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{workdir / (label + '.db')}{suffix}").unlink(missing_ok=True)
    crls = facts["crls"]
    if facts["summary"].get("installed") != 1 or not crls or \
            crls[0].get("entries") != world.big_entries:
        raise RuntimeError(f"big CRL not installed as expected: {facts['summary']} {crls}")
    facts.update(process_seconds=done.seconds, process_cpu_seconds=done.cpu_seconds,
                 process_max_rss_bytes=done.max_rss_bytes)
    return facts


def big_openssl_once(world: World) -> dict:
    cmd = ["openssl", "crl", "-in", str(world.big_der), "-inform", "DER", "-noout",
           "-CAfile", str(world.big_ca_pem), "-verify"]
    done = run_child(cmd)
    if done.returncode or "verify OK" not in done.stdout + done.stderr:
        raise RuntimeError(f"openssl crl -verify failed: {done.stderr.strip()}")
    return {"seconds": done.seconds, "cpu_seconds": done.cpu_seconds,
            "max_rss_bytes": done.max_rss_bytes}


def bench_big(world: World, server: ServerProcess, backends: list[Backend], workdir: Path,
              rounds: int, profile: dict | None) -> dict:
    """``rounds`` rounds of: openssl, pkiq DER, pkiq gzip (per database), interleaved so
    that load drifting over the run falls on all alike."""
    der_size, gz_size = world.big_der.stat().st_size, world.big_gz.stat().st_size
    runs: dict[str, list[dict]] = {"openssl": []}
    variants = [(f"pkiq-{fmt}-{b.name}", b, server.url(path)) for b in backends
                for fmt, path in (("der", "/big/big.crl"), ("gzip", "/big/big.crl.gz"))]
    for key, _b, _u in variants:
        runs[key] = []
    load0, machine = loadavg(), MachineCpu()
    for round_number in range(rounds):
        runs["openssl"].append(big_openssl_once(world))
        for key, backend, url in variants:
            runs[key].append(big_pkiq_once(url, backend, world, workdir,
                                           f"big-{key}-{round_number}"))
        log(f"  big CRL round {round_number + 1}: openssl "
            f"{runs['openssl'][-1]['seconds']:.2f} s; " + ", ".join(
                f"{k} {runs[k][-1]['refresh_seconds']:.2f} s / "
                f"{runs[k][-1]['process_max_rss_bytes'] / 2**20:.0f} MiB"
                for k, _b, _u in variants))
    out = {"entries": world.big_entries, "der_bytes": der_size, "gzip_bytes": gz_size,
           "rounds": rounds, "loadavg_start": load0, "loadavg_end": loadavg(),
           "machine_cpu_busy_percent": machine.busy_percent(),
           "rss_limit_bytes": GOAL_RSS_FACTOR * der_size + GOAL_RSS_EXTRA,
           "rss_limit2_bytes": GOAL2_RSS_FACTOR * der_size + GOAL_RSS_EXTRA}
    ossl = runs["openssl"]
    out["openssl"] = {
        "command": "openssl crl -in big.crl -inform DER -noout -CAfile ca.pem -verify",
        "seconds": spread([r["seconds"] for r in ossl]),
        "cpu_seconds": spread([r["cpu_seconds"] for r in ossl]),
        "max_rss_mb": spread([r["max_rss_bytes"] / 2**20 for r in ossl])}
    openssl_s = out["openssl"]["seconds"]["median"]
    out["pkiq"] = {}
    for key, _b, _u in variants:
        rs = runs[key]
        peak = max(r["process_max_rss_bytes"] for r in rs)
        refresh_s = median([r["refresh_seconds"] for r in rs])
        out["pkiq"][key] = {
            "refresh_seconds": spread([r["refresh_seconds"] for r in rs]),
            "refresh_cpu_seconds": spread([r["refresh_cpu_seconds"] for r in rs]),
            "process_seconds": spread([r["process_seconds"] for r in rs]),
            "max_rss_mb": spread([r["process_max_rss_bytes"] / 2**20 for r in rs]),
            "rss_before_refresh_mb": spread([r["rss_before_bytes"] / 2**20 for r in rs]),
            "phases_seconds": {p: round(median([r["phases"][p] for r in rs]), 3)
                               for p in PHASES},
            "bytes_received": rs[0]["bytes_received"],
            "time_vs_openssl": round(refresh_s / openssl_s, 2),
            "time_goal_met": refresh_s <= GOAL_BIG_TIME * openssl_s,
            "peak_rss_bytes": peak,
            "rss_goal_met": peak <= out["rss_limit_bytes"],
            "refresh_rss_growth_mb": spread([(r["rss_peak_bytes"] - r["rss_before_bytes"])
                                             / 2**20 for r in rs]),
            "time_goal2_met": refresh_s <= GOAL2_BIG_TIME * openssl_s,
            "rss_goal2_met": peak <= out["rss_limit2_bytes"]}
    if profile is not None:
        for key, backend, url in variants[:2]:
            stats_file = workdir / f"{key}.prof"
            big_pkiq_once(url, backend, world, workdir, f"profile-{key}", stats_file)
            text = io.StringIO()
            pstats.Stats(str(stats_file), stream=text).sort_stats("cumulative").print_stats(30)
            profile[f"big {key} (main thread)"] = text.getvalue()
    return out


# ---------------------------------------------------------------- (d) hostile points

HOSTILE_EXPECTED = {  # path -> how its refusal starts or what it contains
    "/junk.der": "truncated or malformed DER CRL", "/junk.pem": "PEM block #1: truncated",
    "/junk.pem.gz": "gzip: PEM block #1: truncated", "/bomb.zip": "zip member 1 (bomb.crl) "
    "expands more than", "/bomb.gz": "the gzip file expands more than"}


def hostile_child(database_url: str, urls_file: Path, result: Path) -> int:
    """In a fresh process: a database with the default settings and the hostile points,
    then one refresh, timed; this process's peak RSS before and after it."""
    from ca import crl_config
    from scheduler import refresh as refresh_module
    from shell.db import make_engine, migrate, session_factory, transaction

    engine = make_engine(database_url)
    migrate(engine)
    sessions = session_factory(engine)
    urls = json.loads(urls_file.read_text())
    with transaction(sessions) as session:
        crl_config.add_points(session, urls["endless"] + list(urls["others"].values()),
                              now_utc())
    before = vm_hwm_bytes()
    t0 = time.perf_counter()
    report = refresh_module.refresh(sessions, now_utc, trigger="manual")
    seconds = time.perf_counter() - t0
    engine.dispose()
    result.write_text(json.dumps({"seconds": seconds, "rss_before_bytes": before,
                                  "rss_peak_bytes": vm_hwm_bytes(),
                                  "points": [p.as_dict() for p in report.points]}))
    return 0


def hostile_problem(urls: dict, points: list[dict]) -> str | None:
    """Why a hostile run does not count (a point not refused as expected), or None."""
    errors = {p["url"]: p["error"] or "" for p in points}
    for url in urls["endless"]:
        if "exceeds the limit of 67,108,864 bytes" not in errors.get(url, ""):
            return f"{url}: {errors.get(url)!r}"
    for path, url in urls["others"].items():
        if HOSTILE_EXPECTED[path] not in errors.get(url, ""):
            return f"{url}: {errors.get(url)!r}"
    return None


def bench_hostile(workdir: Path, rounds: int) -> dict:
    """``rounds`` refreshes of the hostile points (a fresh database each), each in a child
    process under GNU time, against one server process (``python -m tests.hostile``)."""
    server = subprocess.Popen([sys.executable, "-m", "tests.hostile"], cwd=ROOT,
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        urls = json.loads(server.stdout.readline())
        urls_file = workdir / "hostile-urls.json"
        urls_file.write_text(json.dumps(urls))
        runs = []
        load0, machine = loadavg(), MachineCpu()
        for number in range(rounds):
            result = workdir / f"hostile-{number}.json"
            done = run_child([sys.executable, "-m", "bench.bench_crl", "--hostile-child",
                              f"sqlite:///{workdir / f'hostile-{number}.db'}", str(urls_file),
                              str(result)], cwd=ROOT)
            if done.returncode:
                raise RuntimeError(f"hostile child failed: {done.stderr.strip()[-800:]}")
            facts = json.loads(result.read_text())
            problem = hostile_problem(urls, facts["points"])
            if problem:
                raise RuntimeError(f"hostile run {number + 1} does not count: {problem}")
            runs.append({"seconds": facts["seconds"], "rss_before_bytes":
                         facts["rss_before_bytes"], "rss_peak_bytes": facts["rss_peak_bytes"],
                         "process_max_rss_bytes": done.max_rss_bytes,
                         "process_seconds": done.seconds})
            log(f"  hostile round {number + 1}: {facts['seconds']:.2f} s, peak RSS "
                f"{done.max_rss_bytes / 2**20:.1f} MiB (process), "
                f"{facts['rss_before_bytes'] / 2**20:.1f} MiB before the refresh")
    finally:
        server.terminate()
        server.wait(10)
        server.stdout.close()
    peak = max(r["process_max_rss_bytes"] for r in runs)
    return {"points": len(urls["endless"]) + len(urls["others"]),
            "served": {"endless": len(urls["endless"]), "others": sorted(urls["others"])},
            "settings": "defaults: parallelism 16, max_bytes 64 MiB, memory budget 8 MiB",
            "rounds": rounds, "loadavg_start": load0, "loadavg_end": loadavg(),
            "machine_cpu_busy_percent": machine.busy_percent(),
            "seconds": spread([r["seconds"] for r in runs]),
            "max_rss_mb": spread([r["process_max_rss_bytes"] / 2**20 for r in runs]),
            "rss_before_refresh_mb": spread([r["rss_before_bytes"] / 2**20 for r in runs]),
            "peak_rss_bytes": peak, "goal_bytes": GOAL_HOSTILE_RSS,
            "goal_met": peak < GOAL_HOSTILE_RSS}


# ---------------------------------------------------------------- report

def ratio(slow: float, fast: float) -> float:
    return round(slow / fast, 2) if fast else float("inf")


def summarise(report: dict) -> dict:
    """Medians per tool and scenario, ratios against fetch-crl, the goals."""
    rows: dict[str, dict] = {}
    for name, reps in report["pkiq"].items():
        rows[name] = {s: spread([rep[s]["seconds"] for rep in reps]) for s, _g, _e in SCENARIOS}
        rows[name]["cpu"] = {s: round(median([rep[s].get("process_cpu_seconds",
                                                         rep[s].get("self_cpu_seconds"))
                                              for rep in reps]), 2)
                             for s, _g, _e in SCENARIOS}
    for name, run in report["fetch_crl"].items():
        rows[name] = {s: spread([run[s]["seconds"]]) for s, _g, _e in SCENARIOS}
        rows[name]["cpu"] = {s: round(run[s]["process_cpu_seconds"], 2) for s, _g, _e in SCENARIOS}
    requests = {name: {s: reps[-1][s]["server"]["requests"] for s, _g, _e in SCENARIOS}
                for name, reps in report["pkiq"].items()}
    requests.update({name: {s: run[s]["server"]["requests"] for s, _g, _e in SCENARIOS}
                     for name, run in report["fetch_crl"].items()})
    goals: dict = {}
    command = rows.get("pkiq crl refresh (SQLite)")
    fetchers = {n: r for n, r in rows.items() if n.startswith("fetch-crl")}
    if command and fetchers:
        best = {s: min(r[s]["median"] for r in fetchers.values()) for s, _g, _e in SCENARIOS}
        goals["speedup_vs_fastest_fetch_crl"] = {
            s: ratio(best[s], command[s]["median"]) for s, _g, _e in SCENARIOS}
        goals["speedup_goal_met"] = all(v >= GOAL_SPEEDUP for v in
                                        goals["speedup_vs_fastest_fetch_crl"].values())
    if command:
        runs = command["unchanged"]["all"]
        goals["all_304_command_seconds"] = command["unchanged"]["median"]
        goals["all_304_runs_under_goal"] = sum(1 for v in runs if v < GOAL_304_SECONDS)
        goals["all_304_runs"] = len(runs)
        goals["all_304_goal_met"] = goals["all_304_runs_under_goal"] == len(runs)
    return {"rows": rows, "requests": requests, "goals": goals}


def render_table(report: dict) -> str:
    cfg, m, summary = report["config"], report["machine"], report["summary"]
    lines = [f"pkiq CRL refresh benchmark - {report['started_at']} "
             f"({'quick' if cfg['quick'] else 'full'} run)",
             f"machine: nproc {m['nproc']}, {m['cpu_model']}, load avg at start "
             f"{report['loadavg_start']}, at end {report['loadavg_end']}",
             f"fetch-crl: {report.get('fetch_crl_version') or 'not run'}; openssl: "
             f"{m['openssl_binary']}", ""]
    world = report["world"]
    lines.append(f"(a)+(c) {world['points']:,} distribution points, {world['points']:,} EC P-256 "
                 f"CAs, one CRL each ({world['big_share_count']} with "
                 f"{world['big_share_entries']:,} entries, the rest 0-20); "
                 f"{world['bytes_generation_1']:,} bytes of DER; HTTP server in its own process")
    head = (f"{'tool':<34} {'par':>4} {'first fetch s':>19} {'all 304 s':>19} "
            f"{'all changed s':>19} {'CPU s f/u/c':>16}")
    lines += [head, "-" * len(head)]
    for name, row in summary["rows"].items():
        par = report["parallelism"].get(name, "")
        cells = []
        for s, _g, _e in SCENARIOS:
            cell = f"{row[s]['median']:.2f}"
            if row[s]["min"] != row[s]["max"]:
                cell += f" ({row[s]['min']:.2f}-{row[s]['max']:.2f})"
            cells.append(cell)
        cpu = "/".join(f"{row['cpu'][s]:.1f}" for s, _g, _e in SCENARIOS)
        lines.append(f"{name:<34} {par!s:>4} {cells[0]:>19} {cells[1]:>19} {cells[2]:>19} "
                     f"{cpu:>16}")
    lines.append("  seconds: median over the repetitions (min-max); fetch-crl's 'all 304' column "
                 "is its unchanged run:")
    lines.append("  it sends no conditional GET, but a HEAD and compares Last-Modified, then "
                 "re-verifies its cached copy.")
    lines.append("  what the server saw per tool (first / all 304 / all changed):")
    for name, mix in summary["requests"].items():
        lines.append(f"    {name}: " + " / ".join(
            ", ".join(f"{n} {k}" for k, n in mix[s].items()) for s, _g, _e in SCENARIOS))
    goals = summary["goals"]
    if cfg["quick"]:
        lines.append("  (quick run: too small a world to judge the goals by)")
    if "speedup_vs_fastest_fetch_crl" in goals:
        sp = goals["speedup_vs_fastest_fetch_crl"]
        lines.append(f"  fastest fetch-crl / `pkiq crl refresh`: first {sp['first']}x, unchanged "
                     f"{sp['unchanged']}x, changed {sp['changed']}x -> goal >= {GOAL_SPEEDUP:g}x: "
                     f"{'MET' if goals['speedup_goal_met'] else 'NOT MET'}")
    if "all_304_command_seconds" in goals:
        lines.append(f"  all-304 `pkiq crl refresh` (start-up included): median "
                     f"{goals['all_304_command_seconds']:.2f} s; under {GOAL_304_SECONDS:g} s in "
                     f"{goals['all_304_runs_under_goal']} of {goals['all_304_runs']} runs -> goal: "
                     f"{'MET' if goals['all_304_goal_met'] else 'NOT MET'}")
    if report.get("startup"):
        lines.append(f"  pkiq start-up (`{report['startup']['command']}`): "
                     f"{report['startup']['median']:.2f} s")
    big = report.get("big")
    if big:
        lines += ["", f"(b) one CRL with {big['entries']:,} entries: DER {big['der_bytes']:,} "
                  f"bytes, gzip {big['gzip_bytes']:,} bytes; median of {big['rounds']} rounds; "
                  f"RSS limit {big['rss_limit_bytes'] / 2**20:.1f} MiB"]
        head = (f"{'what':<26} {'wall s':>8} {'process s':>10} {'peak RSS MiB':>12} "
                f"{'vs openssl':>11} {'time goal':>10} {'RSS goal':>9}")
        lines += [head, "-" * len(head)]
        o = big["openssl"]
        lines.append(f"{'openssl crl -verify (DER)':<26} {o['seconds']['median']:>8.2f} "
                     f"{o['seconds']['median']:>10.2f} {o['max_rss_mb']['max']:>12.1f}")
        for key, r in big["pkiq"].items():
            lines.append(
                f"{key:<26} {r['refresh_seconds']['median']:>8.2f} "
                f"{r['process_seconds']['median']:>10.2f} {r['max_rss_mb']['max']:>12.1f} "
                f"{r['time_vs_openssl']:>10.2f}x {'MET' if r['time_goal_met'] else 'NOT MET':>10} "
                f"{'MET' if r['rss_goal_met'] else 'NOT MET':>9}")
        lines.append("  pkiq wall s: refresh() in a fresh child process (fetch + decode + "
                     "validate + install + commit); process s adds")
        lines.append("  interpreter start-up and database set-up; peak RSS: the whole child "
                     "process (GNU time %M)")
        lines.append(f"  issue 10 goal: <= {GOAL2_BIG_TIME:g}x openssl's time and peak RSS <= "
                     f"DER + 100 MB = {big['rss_limit2_bytes'] / 2**20:.1f} MiB (whole "
                     "process):")
        for key, r in big["pkiq"].items():
            growth = r["refresh_rss_growth_mb"]["median"]
            lines.append(f"    {key}: time {'MET' if r['time_goal2_met'] else 'NOT MET'}, RSS "
                         f"{'MET' if r['rss_goal2_met'] else 'NOT MET'} (peak "
                         f"{r['max_rss_mb']['max']:.1f} MiB; the refresh itself added "
                         f"{growth:.1f} MiB to the {r['rss_before_refresh_mb']['median']:.0f} "
                         "MiB the process held before it)")
        for key, r in big["pkiq"].items():
            ph = r["phases_seconds"]
            lines.append(f"  {key}: fetch {ph['fetch']:.2f}, decode {ph['decode_crls']:.2f}, "
                         f"check {ph['check']:.2f} (signature {ph['verify_signature']:.2f}, "
                         f"entry extensions {ph['check_entry_extensions']:.2f}), install "
                         f"{ph['install']:.2f} s; RSS before refresh "
                         f"{r['rss_before_refresh_mb']['median']:.0f} MiB")
    hostile = report.get("hostile")
    if hostile:
        lines += ["", f"(d) {hostile['points']} hostile points at once, {hostile['settings']}: "
                  f"{hostile['served']['endless']} endless bodies, "
                  f"{', '.join(hostile['served']['others'])}; {hostile['rounds']} rounds",
                  f"  refresh {hostile['seconds']['median']:.2f} s, peak RSS (whole process) "
                  f"{hostile['max_rss_mb']['median']:.1f} MiB median, "
                  f"{hostile['peak_rss_bytes'] / 10**6:.1f} MB at most -> goal < "
                  f"{GOAL_HOSTILE_RSS / 10**6:.0f} MB: "
                  f"{'MET' if hostile['goal_met'] else 'NOT MET'}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 50 points, a 100,000-entry CRL, one repetition, "
                        "fetch-crl only with pkiq's parallelism")
    parser.add_argument("--points", type=int, help="distribution points and CAs (default "
                        "1000; --quick: 50)")
    parser.add_argument("--big-share-entries", type=int, default=10_000,
                        help="entries of the 1%% bigger CRLs in the world (default 10000)")
    parser.add_argument("--big-entries", type=int, help="entries of the big CRL (b) (default "
                        "1000000; --quick: 100000)")
    parser.add_argument("--repeat", type=int, help="pkiq repetitions of (a), each with a "
                        "fresh database (default 3; --quick: 1)")
    parser.add_argument("--big-rounds", type=int, help="rounds of (b) (default 3; --quick: 1)")
    parser.add_argument("--parallel", type=int, default=PARALLELISM,
                        help=f"pkiq's parallelism and fetch-crl's -p (default {PARALLELISM})")
    parser.add_argument("--fetch-crl-default", action=argparse.BooleanOptionalAction,
                        default=None, help="also run fetch-crl with its own default "
                        "parallelism (none: one trust anchor at a time; default: on, off with "
                        "--quick)")
    parser.add_argument("--no-fetch-crl", action="store_true", help="skip (c)")
    parser.add_argument("--no-cli", action="store_true", help="skip `pkiq crl refresh` runs")
    parser.add_argument("--no-big", action="store_true", help="skip (b)")
    parser.add_argument("--no-hostile", action="store_true", help="skip (d)")
    parser.add_argument("--hostile-rounds", type=int, help="rounds of (d) (default 3; "
                        "--quick: 1)")
    parser.add_argument("--postgres", action="store_true",
                        help="also run pkiq in-process and (b) against PostgreSQL (a schema "
                        "of its own, dropped afterwards)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--profile", action="store_true",
                        help="after the timed runs, cProfile an all-304 refresh() and (b)'s "
                        "refresh (main thread); the top functions go into the JSON")
    parser.add_argument("--wait-load", type=float, metavar="LOAD",
                        help="first wait (up to 10 min) until the 1-minute load average is "
                        "below LOAD")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # bench/run hands every benchmark the same options
        print(f"bench_crl: ignoring options for other benchmarks: {' '.join(unknown)}",
              file=sys.stderr)
    quick = args.quick
    args.points = args.points or (50 if quick else 1000)
    args.big_entries = args.big_entries or (100_000 if quick else 1_000_000)
    args.repeat = args.repeat or (1 if quick else 3)
    args.big_rounds = args.big_rounds or (1 if quick else 3)
    args.hostile_rounds = args.hostile_rounds or (1 if quick else 3)
    if args.fetch_crl_default is None:
        args.fetch_crl_default = not quick
    return args


def wait_for_load(limit: float, max_seconds: int = 600) -> dict:
    start = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - start < max_seconds:
        log(f"load average {loadavg()} >= {limit}: waiting")
        time.sleep(30)
    return {"limit": limit, "waited_seconds": round(time.monotonic() - start),
            "loadavg": loadavg()}


def main(argv: list[str] | None = None) -> int:
    raw = list(argv if argv is not None else sys.argv[1:])
    if raw[:1] == ["--serve"]:
        return serve(Path(raw[1]))
    if raw[:1] == ["--big-setup"]:
        return big_setup(raw[1], raw[2], Path(raw[3]))
    if raw[:1] == ["--hostile-child"]:
        return hostile_child(raw[1], Path(raw[2]), Path(raw[3]))
    args = parse_args(argv)
    if not shutil.which("openssl"):
        print("bench_crl: the openssl binary is required", file=sys.stderr)
        return 2
    if not GNU_TIME.exists():
        print(f"bench_crl: {GNU_TIME} (GNU time) is required, for the CPU time and peak RSS "
              "of child processes: apt-get install -y time", file=sys.stderr)
        return 2
    fetch_crl = None if args.no_fetch_crl else fetch_crl_version()
    if not args.no_fetch_crl and fetch_crl is None:
        print("bench_crl: fetch-crl is not installed; part (c) compares against it.\n"
              f"  install it with: {FETCH_CRL_INSTALL}   (as root; the Debian package)\n"
              "  or run without part (c): bench/run crl --no-fetch-crl", file=sys.stderr)
        return 2
    waited = wait_for_load(args.wait_load) if args.wait_load else None
    started = now_utc()
    report: dict = {
        "benchmark": "crl",
        "units": "seconds; *_mb fields are MiB (2**20 bytes); *_bytes fields are bytes",
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["bench/run crl", *(argv if argv is not None else sys.argv[1:])]),
        "config": {"quick": args.quick, "points": args.points,
                   "big_share_entries": args.big_share_entries,
                   "big_entries": args.big_entries, "repeat": args.repeat,
                   "big_rounds": args.big_rounds, "hostile_rounds": args.hostile_rounds,
                   "parallel": args.parallel,
                   "postgres": args.postgres, "seed": args.seed},
        "machine": machine_facts(), "fetch_crl_version": fetch_crl, "waited_for_load": waited,
        "loadavg_start": loadavg(), "pkiq": {}, "fetch_crl": {}, "parallelism": {},
    }
    if args.postgres:
        report["postgresql"] = postgres_facts(args.postgres_url)
    log(f"machine: nproc {report['machine']['nproc']}, load avg {report['loadavg_start']}")
    backends = [Backend("sqlite")] + ([Backend("postgresql", args.postgres_url)]
                                      if args.postgres else [])
    label = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    profile: dict | None = {} if args.profile else None
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-crl-") as tmp:
        workdir = Path(tmp)
        log(f"building the world: {args.points} CAs and CRLs (x2 generations), and a "
            f"{args.big_entries:,}-entry CRL (untimed) ...")
        world = build_world(workdir, args.points, args.big_share_entries, args.big_entries,
                            args.seed)
        report["world"] = {
            "points": args.points, "ca_key": "EC P-256 (self-signed), ECDSA-SHA256 CRLs",
            "big_share_count": sum(1 for e in world.entries if e == args.big_share_entries),
            "big_share_entries": args.big_share_entries,
            "entries_total_generation_1": sum(world.entries),
            "bytes_generation_1": world.bytes_total[1],
            "bytes_generation_2": world.bytes_total[2], "format": "DER"}
        server = ServerProcess(world.manifest)
        try:
            log(f"server: pid {server.proc.pid}, port {server.port}")
            for backend in backends:
                name = f"pkiq refresh() ({label[backend.name]})"
                report["parallelism"][name] = args.parallel
                report["pkiq"][name] = []
                for rep in range(args.repeat):
                    log(f"pkiq in-process, {label[backend.name]}, repetition {rep + 1}")
                    report["pkiq"][name].append(pkiq_in_process(
                        backend, world, server, workdir, f"a-{backend.name}-{rep}",
                        args.parallel, profile if rep == args.repeat - 1 else None))
            if not args.no_cli:
                name = "pkiq crl refresh (SQLite)"
                report["parallelism"][name] = args.parallel
                report["pkiq"][name] = []
                report["startup"] = pkiq_startup(workdir, 3)
                for rep in range(args.repeat):
                    log(f"pkiq crl refresh (command), repetition {rep + 1}")
                    report["pkiq"][name].append(pkiq_cli(world, server, workdir,
                                                         f"cli-{rep}", args.parallel))
            if not args.no_fetch_crl:
                tree = fetch_crl_tree(world, server, workdir)
                settings = [args.parallel] + ([None] if args.fetch_crl_default else [])
                for parallelism in settings:
                    name = f"fetch-crl -p {parallelism}" if parallelism else \
                        "fetch-crl (default: sequential)"
                    report["parallelism"][name] = parallelism or 1
                    log(f"{name}")
                    report["fetch_crl"][name] = fetch_crl_runs(world, server, workdir, tree,
                                                               parallelism)
            if not args.no_big:
                log(f"(b) big CRL: {world.big_entries:,} entries, "
                    f"{world.big_der.stat().st_size:,} bytes DER, "
                    f"{world.big_gz.stat().st_size:,} gzip")
                report["big"] = bench_big(world, server, backends, workdir, args.big_rounds,
                                          profile)
            if not args.no_hostile:
                log(f"(d) hostile points, {args.hostile_rounds} rounds")
                report["hostile"] = bench_hostile(workdir, args.hostile_rounds)
        finally:
            server.stop()
    report["summary"] = summarise(report)
    if profile is not None:
        report["profile"] = profile
    report["loadavg_end"] = loadavg()
    report["finished_at"] = now_utc().strftime("%Y-%m-%dT%H:%M:%SZ")
    report["elapsed_seconds"] = round((now_utc() - started).total_seconds(), 1)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = args.results_dir / f"crl-{started.strftime('%Y%m%dT%H%M%SZ')}{suffix}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    shutil.copyfile(path, args.results_dir / f"crl-latest{suffix}.json")
    print(render_table(report))
    if profile:
        print("\nprofiles: in the JSON under 'profile'")
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
