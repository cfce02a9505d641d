"""Signing benchmark: pkiq certs/s beside the CA key's own sign rate, and index growth.

Measures, in one process and one run:

1. Throughput: for an RSA-4096 CA and a P-256 CA, sign ``--count`` pre-generated CSRs with
   ``ca.authority.sign_csr``, one transaction (commit) per certificate, against a fresh
   database (SQLite by default; PostgreSQL too with ``--postgres``). Judged against the raw
   sign rate of a key of the same type through ``cryptography`` (the library pkiq signs
   with, linking its own OpenSSL: the physical limit), measured in the same run just before
   and just after; the single-process ``openssl speed -mr`` rate is printed beside it as a
   second reference, converted to signatures per wall-clock second (openssl divides by user
   CPU time). The CA signer is wrapped so the
   time inside ``sign_certificate`` is summed during the run itself: "sign ms" vs "other ms"
   (CSR checks, policy, database, ORM) per certificate.
2. Index growth: a P-256 CA whose certificates table already holds 1,000 and (in another
   database) 200,000 rows; the same CSRs are signed against both, in alternating blocks so
   that background load hits both sizes alike. Done for ``unique_subject = no`` (the pkiq
   default) and ``yes`` (the ``openssl ca`` default).
3. For comparison, ``openssl ca -batch`` against a demoCA whose index.txt has the same two
   sizes (skip with ``--no-openssl-ca``).

Run through ``bench/run``; results go to ``bench/results/`` as JSON and to stdout as a table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cryptography
import sqlalchemy
from cryptography import x509
from cryptography.hazmat.backends.openssl import backend as crypto_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, func, select, text

from ca import authority
from ca.authority import CaOptions
from ca.keys import generate_key
from ca.models import Certificate
from shell.db import make_engine, migrate, session_factory, transaction

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_POSTGRES_URL = os.environ.get(
    "PKIQ_BENCH_POSTGRES_URL",
    os.environ.get("PKIQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
PASSPHRASE = b"pkiq benchmark passphrase"
PROFILE = "webclientandserver"  # pkiq's default profile (serverAuth + clientAuth)
CA_KEY_TYPES = ("rsa4096", "ec-p256")
SPEED_ALGORITHM = {"rsa4096": "rsa4096", "ec-p256": "ecdsap256"}
# pkiq certs/s on SQLite >= 75% of the CA key's own sign rate through cryptography in one
# process (the library pkiq signs with: its rate is the physical limit), both key types.
# ``openssl speed`` is printed beside it as a second reference, in wall-clock sign/s.
RAW_GOAL = 0.75
GROWTH_GOAL = 1.30  # per-certificate time at the large size <= 1.3x that at the small size


# ---------------------------------------------------------------- small helpers

def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class MachineCpu:
    """Whole-machine CPU use over an interval, from /proc/stat: with N cores, a single-threaded
    benchmark alone shows about 100/N %; anything above that is other work on the box."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    def busy_percent(self) -> float | None:
        end = self._read()
        if self.start is None or end is None or end[0] == self.start[0]:
            return None
        total, idle = end[0] - self.start[0], end[1] - self.start[1]
        return round(100.0 * (total - idle) / total, 1)


def run_text(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def latency_summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
        "p50_ms": round(percentile(ordered, 0.50) * 1e3, 3),
        "p90_ms": round(percentile(ordered, 0.90) * 1e3, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }


def machine_facts() -> dict:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": run_text("nproc"),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "mem_total": mem_total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "cryptography_openssl": crypto_backend.openssl_version_text(),
        "openssl_binary": run_text("openssl", "version"),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": __import__("sqlite3").sqlite_version,
        "git_commit": run_text("git", "rev-parse", "HEAD"),
        "git_dirty_ca_pkiq": run_text("git", "status", "--porcelain", "--", "ca", "pkiq"),
        # identifies uncommitted edits to the code under test (empty diff: the commit itself)
        "git_diff_sha256_ca_pkiq": hashlib.sha256(
            run_text("git", "diff", "HEAD", "--", "ca", "pkiq").encode()).hexdigest()[:16],
    }


# ---------------------------------------------------------------- requests

def make_request_keys(kind: str, count: int) -> list:
    if kind == "rsa2048":
        return [rsa.generate_private_key(public_exponent=65537, key_size=2048)
                for _ in range(count)]
    return [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)]


def make_csrs(count: int, keys: list, *, prefix: str = "host") -> list[bytes]:
    """PEM requests with distinct CNs (``host00042.example.com``), the CN repeated as a DNS
    SAN (as the Expressway guide asks), signed SHA-256 by one of a few cached keys."""
    out = []
    for i in range(count):
        cn = f"{prefix}{i:05d}.example.com"
        name = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Ltd"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Video"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ])
        csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
               .sign(keys[i % len(keys)], hashes.SHA256()))
        out.append(csr.public_bytes(serialization.Encoding.PEM))
    return out


# ---------------------------------------------------------------- raw sign rates

def openssl_speed(key_type: str, seconds: int) -> dict:
    """``openssl speed -seconds S -mr ALG``, one process (no -multi). ``sign_per_s`` is what
    openssl prints: signatures per second of *user CPU* time, which flatters it on a busy
    machine; ``sign_per_wall_s`` is the count it reports on stderr (+R1 RSA, +R5 ECDSA
    sign) over the S wall-clock seconds its alarm allowed, comparable with pkiq's rates."""
    algorithm = SPEED_ALGORITHM[key_type]
    cmd = ["openssl", "speed", "-seconds", str(seconds), "-mr", algorithm]
    machine_cpu = MachineCpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    busy = machine_cpu.busy_percent()
    sign_per_s = None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("+")]
    for line in lines:
        fields = line.split(":")
        # +F2:k:bits:sign/s:verify/s[...] for RSA, +F4:k:bits:sign/s:verify/s for ECDSA
        if fields[0] in ("+F2", "+F4"):
            sign_per_s = float(fields[3])
    counts = sign_counts(proc.stderr)
    if sign_per_s is None and counts:  # older layouts: only the +R lines
        sign_per_s = sum(c for c, _t in counts) / sum(t for _c, t in counts)
    if sign_per_s is None or not counts:
        raise RuntimeError(f"could not read sign/s from {' '.join(cmd)}:\n{proc.stdout}")
    return {"command": " ".join(cmd), "sign_per_s": round(sign_per_s, 2),
            "sign_per_wall_s": round(sum(c for c, _t in counts) / seconds, 2),
            "machine_cpu_busy_percent": busy, "machine_readable": lines}


def sign_counts(stderr: str) -> list[tuple[int, float]]:
    """(signatures, user CPU seconds) of each process from ``openssl speed -mr``'s stderr:
    ``+R1:count:bits:seconds`` (RSA sign) or ``+R5:...`` (ECDSA sign), one line per process
    with ``-multi``."""
    found = []
    for line in stderr.splitlines():
        fields = line.strip().split(":")
        if fields[0] in ("+R1", "+R5") and len(fields) >= 4:
            found.append((int(fields[1]), float(fields[3])))
    return found


def pyca_sign_rate(private_key, seconds: float) -> float:
    """The CA key's raw sign rate through ``cryptography`` over a TBS-sized message, with the
    hash pkiq uses: what pkiq could reach if it did nothing but sign."""
    message = secrets.token_bytes(700)
    if isinstance(private_key, rsa.RSAPrivateKey):
        def sign():
            private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    else:
        def sign():
            private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    for _ in range(3):
        sign()
    count, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            sign()
        count += 10
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return round(count / elapsed, 2)


# ---------------------------------------------------------------- databases

@dataclass
class Backend:
    name: str
    base_url: str | None = None  # PostgreSQL server URL; None for SQLite

    @contextlib.contextmanager
    def database(self, workdir: Path, label: str):
        """A fresh, migrated database: a SQLite file, or a PostgreSQL schema of its own."""
        if self.name == "sqlite":
            engine = make_engine(f"sqlite:///{workdir / f'{label}.db'}")
            try:
                migrate(engine)
                yield engine
            finally:
                engine.dispose()
            return
        schema = f"pkiq_bench_{label.replace('-', '_')}_{secrets.token_hex(4)}"
        admin = create_engine(self.base_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'create schema "{schema}"'))
        sep = "&" if "?" in self.base_url else "?"
        engine = make_engine(f"{self.base_url}{sep}options=-csearch_path%3D{schema}")
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'drop schema "{schema}" cascade'))
            admin.dispose()


def postgres_facts(url: str) -> dict:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            facts = {"server_version": conn.execute(text("show server_version")).scalar()}
            for setting in ("synchronous_commit", "fsync", "shared_buffers", "wal_level"):
                facts[setting] = conn.execute(text(f"show {setting}")).scalar()
        return facts
    finally:
        engine.dispose()


def new_ca(factory, key_type: str, name: str, *, unique_subject: bool = False):
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Ltd"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"pkiq benchmark {key_type} CA"),
    ])
    with transaction(factory) as session:
        created = authority.create_ca(session, name=name, subject=subject, key_type=key_type,
                                      passphrase=PASSPHRASE, now=now,
                                      options=CaOptions(unique_subject=unique_subject))
    # create_ca returns the CA, or (newer trees) the CA and its warnings
    ca = created[0] if isinstance(created, tuple) else created
    return ca, authority.load_signer(ca, PASSPHRASE)


def active_subject_value(subject_text: str) -> str:
    """What pkiq stores in certificates.active_subject for a valid unique_subject entry: the
    subject itself, or (newer trees) its SHA-256 via ``authority.subject_key``."""
    key = getattr(authority, "subject_key", None)
    return key(subject_text) if key else subject_text


def sign_one(factory, ca_name: str, signer, csr: bytes):
    """One request as a long-running CA worker handles it: its own transaction, the CA row
    read in it (as ``pkiq ca sign`` does), signed and committed. The key stays loaded."""
    with transaction(factory) as session:
        ca = authority.get_ca(session, ca_name)
        return authority.sign_csr(session, ca, signer, csr, profile=PROFILE,
                                  now=dt.datetime.now(dt.UTC))


class TimingSigner:
    """The CA's signer, with the time spent in ``sign_certificate`` (building the DER and the
    signature itself) added up, so the rest of pkiq's per-certificate time can be told apart
    under the load the run actually had."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def public_key(self):
        return self.inner.public_key()

    def sign_certificate(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner.sign_certificate(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def sign_crl(self, *args, **kwargs):
        return self.inner.sign_crl(*args, **kwargs)

    def __getattr__(self, name):  # anything else the Signer protocol grows
        return getattr(self.inner, name)


def count_certificates(factory, ca_id: int) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(Certificate)
                              .where(Certificate.ca_id == ca_id))


# ---------------------------------------------------------------- 1. throughput

def run_pkiq(backend: Backend, key_type: str, csrs: list[bytes], warmup: list[bytes],
             workdir: Path) -> dict:
    """Sign ``csrs`` with a fresh CA of ``key_type`` in a fresh database; time each one."""
    with backend.database(workdir, f"tp-{key_type}") as engine:
        factory = session_factory(engine)
        ca, signer = new_ca(factory, key_type, f"bench-{key_type}")
        for csr in warmup:  # untimed: imports, statement caches, connection pool
            sign_one(factory, ca.name, signer, csr)
        log(f"throughput {key_type} on {backend.name}: signing {len(csrs)} CSRs ...")
        signer = TimingSigner(signer)
        latencies = []
        load_start = loadavg()
        machine_cpu = MachineCpu()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        result = None
        for csr in csrs:
            t0 = time.perf_counter()
            result = sign_one(factory, ca.name, signer, csr)
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start
        machine_busy = machine_cpu.busy_percent()
        load_end = loadavg()
        # Sanity: every certificate is in the database and the last one verifies.
        stored = count_certificates(factory, ca.id)
        assert stored == len(csrs) + len(warmup), (stored, len(csrs), len(warmup))
        result.certificate.verify_directly_issued_by(authority.ca_certificate(ca))
    certs_per_s = len(csrs) / wall
    log(f"throughput {key_type} on {backend.name}: {certs_per_s:.1f} certs/s")
    return {
        "backend": backend.name, "key_type": key_type, "certificates": len(csrs),
        "warmup_certificates": len(warmup),
        "seconds": round(wall, 3), "process_cpu_seconds": round(cpu, 3),
        "certs_per_s": round(certs_per_s, 2),
        "latency": latency_summary(latencies),
        "in_signer_ms_per_cert": round(signer.seconds / signer.calls * 1e3, 3),
        "outside_signer_ms_per_cert": round((wall - signer.seconds) / len(csrs) * 1e3, 3),
        "loadavg_start": load_start, "loadavg_end": load_end,
        "machine_cpu_busy_percent": machine_busy,
    }


def bench_throughput(backends: list[Backend], key_type: str, csrs: list[bytes],
                     warmup: list[bytes], workdir: Path, speed_seconds: int) -> list[dict]:
    """pkiq on each backend, between two measurements of the raw sign rate (openssl speed and
    cryptography) for the same key type; each ratio uses the faster of the two."""
    log(f"{key_type}: openssl speed ({speed_seconds}s sign + {speed_seconds}s verify) and "
        "raw cryptography sign rate, before ...")
    raw_key = generate_key(key_type)
    speed_before = openssl_speed(key_type, speed_seconds)
    pyca_before = pyca_sign_rate(raw_key, speed_seconds)
    runs = [run_pkiq(backend, key_type, csrs, warmup, workdir) for backend in backends]
    log(f"{key_type}: openssl speed and raw cryptography sign rate, after ...")
    speed_after = openssl_speed(key_type, speed_seconds)
    pyca_after = pyca_sign_rate(raw_key, speed_seconds)
    openssl_rate = max(speed_before["sign_per_wall_s"], speed_after["sign_per_wall_s"])
    pyca_rate = max(pyca_before, pyca_after)
    for out in runs:
        rate = out["certs_per_s"]
        out.update({
            "openssl_speed_before": speed_before, "openssl_speed_after": speed_after,
            "openssl_sign_per_wall_s": openssl_rate,
            "pyca_sign_per_s_before": pyca_before, "pyca_sign_per_s_after": pyca_after,
            "pyca_sign_per_s": pyca_rate,
            "ratio_vs_openssl_wall": round(rate / openssl_rate, 3),
            "ratio_vs_pyca": round(rate / pyca_rate, 3),
        })
        if out["backend"] == "sqlite":
            out["goal"] = f">= {RAW_GOAL:.0%} of cryptography's 1-process sign/s"
            out["goal_met"] = out["ratio_vs_pyca"] >= RAW_GOAL
        log(f"throughput {key_type} on {out['backend']}: {rate:.1f} certs/s = "
            f"{out['ratio_vs_pyca']:.1%} of cryptography's {pyca_rate:.1f} sign/s (before "
            f"{pyca_before:.1f}, after {pyca_after:.1f}); openssl speed {openssl_rate:.1f} "
            f"sign/s wall-clock ({out['ratio_vs_openssl_wall']:.1%})")
    return runs


# ---------------------------------------------------------------- 2. index growth

def fill_certificates(engine, ca_id: int, der: bytes, target: int, *, unique_subject: bool,
                      rng: random.Random) -> float:
    """Bulk-insert filler rows until the CA's certificates table holds ``target`` rows.

    Realistic index keys (random 126-bit serials, distinct subjects, a V/E/R mix with dates
    spread over two years) but one real DER blob reused for every row: the row width is right,
    the blob content does not matter to any index."""
    start = time.perf_counter()
    with engine.connect() as conn:
        existing = conn.execute(select(func.count()).select_from(Certificate)
                                .where(Certificate.ca_id == ca_id)).scalar()
    needed = target - existing
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    table = Certificate.__table__
    batch_size = 5000
    done = 0
    while done < needed:
        rows = []
        for i in range(done, min(needed, done + batch_size)):
            serial = authority.serial_hex((rng.getrandbits(126)) | (1 << 126))
            subject = f"/C=GB/O=Example Ltd/OU=Video/CN=filler{i:06d}.example.com"
            issued = now - dt.timedelta(days=rng.randrange(0, 730), seconds=rng.randrange(86400))
            not_after = issued + dt.timedelta(days=365)
            roll = rng.random()
            status = "R" if roll < 0.03 else ("V" if not_after > now else "E")
            rows.append({
                "ca_id": ca_id, "serial": serial, "status": status, "subject": subject,
                "active_subject": (active_subject_value(subject)
                                   if unique_subject and status == "V" else None),
                "not_before": issued - dt.timedelta(minutes=5), "not_after": not_after,
                "revoked_at": issued + dt.timedelta(days=30) if status == "R" else None,
                "revocation_reason": "superseded" if status == "R" else None,
                "invalidity_date": None, "profile": PROFILE, "der": der,
                "created_at": issued,
            })
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
        done += len(rows)
    # Statistics and a clean WAL, as a database that grew over months would have.
    raw = engine.raw_connection()  # autocommit: pkiq's engine would wrap SQL in BEGIN IMMEDIATE
    try:
        if engine.dialect.name == "sqlite":
            raw.driver_connection.execute("ANALYZE")
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            raw.driver_connection.autocommit = True
            raw.driver_connection.execute("VACUUM ANALYZE certificates")
            raw.driver_connection.autocommit = False
    finally:
        raw.close()
    return time.perf_counter() - start


def alternate(labels: list[str], rounds: int) -> list[str]:
    """ABBA order over rounds so neither size always goes first."""
    order = []
    for r in range(rounds):
        order.extend(labels if r % 2 == 0 else list(reversed(labels)))
    return order


def bench_index_growth(backend: Backend, sizes: list[int], csrs: list[bytes], workdir: Path,
                       *, unique_subject: bool, rounds: int, seed: int) -> dict:
    """Sign the same CSRs against a P-256 CA holding ``sizes`` rows (one database each)."""
    tag = "uniq" if unique_subject else "nouniq"
    log(f"index growth on {backend.name}, unique_subject={'yes' if unique_subject else 'no'}: "
        f"sizes {sizes}, {len(csrs)} CSRs each")
    rng = random.Random(seed)
    warmup = 10
    with contextlib.ExitStack() as stack:
        dbs = {}
        for size in sizes:
            engine = stack.enter_context(backend.database(workdir, f"ix-{tag}-{size}"))
            factory = session_factory(engine)
            ca, signer = new_ca(factory, "ec-p256", f"bench-index-{size}",
                                unique_subject=unique_subject)
            first = sign_one(factory, ca.name, signer, csrs[0])  # a real DER for the filler
            der = first.certificate.public_bytes(serialization.Encoding.DER)
            fill_seconds = fill_certificates(engine, ca.id, der, size - warmup,
                                             unique_subject=unique_subject, rng=rng)
            # warm-up with requests the timed part does not use (distinct subjects)
            for csr in csrs[-(warmup):]:
                sign_one(factory, ca.name, signer, csr)
            existing = count_certificates(factory, ca.id)
            dbs[size] = {"factory": factory, "ca": ca, "signer": signer, "latencies": [],
                         "existing_at_start": existing, "fill_seconds": round(fill_seconds, 1)}
            log(f"  {size}: filled in {fill_seconds:.1f}s, {existing} rows before timing")
        timed_csrs = csrs[1:len(csrs) - warmup]  # csrs[0] made the filler DER, untimed
        per_block = -(-len(timed_csrs) // rounds)
        cursor = dict.fromkeys(sizes, 0)
        blocks = []
        load_start = loadavg()
        machine_cpu = MachineCpu()
        for label in alternate([str(s) for s in sizes], rounds):
            size = int(label)
            db = dbs[size]
            todo = timed_csrs[cursor[size]:cursor[size] + per_block]
            t_block = time.perf_counter()
            for csr in todo:
                t0 = time.perf_counter()
                sign_one(db["factory"], db["ca"].name, db["signer"], csr)
                db["latencies"].append(time.perf_counter() - t0)
            blocks.append({"size": size, "certificates": len(todo),
                           "ms_per_cert": round((time.perf_counter() - t_block) / max(1, len(todo))
                                                * 1e3, 3)})
            cursor[size] += len(todo)
        load_end = loadavg()
        results = {}
        for size, db in dbs.items():
            lat = db["latencies"]
            results[str(size)] = {
                "existing_at_start": db["existing_at_start"],
                "certificates": len(lat),
                "ms_per_cert": round(sum(lat) / len(lat) * 1e3, 3),
                "latency": latency_summary(lat),
                "fill_seconds": db["fill_seconds"],
            }
    small, large = str(min(sizes)), str(max(sizes))
    ratio = results[large]["ms_per_cert"] / results[small]["ms_per_cert"]
    out = {
        "backend": backend.name, "ca_key_type": "ec-p256",
        "unique_subject": unique_subject, "sizes": results, "blocks": blocks,
        "ratio_large_vs_small": round(ratio, 3),
        "goal": f"<= {GROWTH_GOAL}x", "goal_met": ratio <= GROWTH_GOAL,
        "loadavg_start": load_start, "loadavg_end": load_end,
        "machine_cpu_busy_percent": machine_cpu.busy_percent(),
    }
    log(f"  {small}: {results[small]['ms_per_cert']:.3f} ms/cert, {large}: "
        f"{results[large]['ms_per_cert']:.3f} ms/cert, ratio {ratio:.2f}")
    return out


# ---------------------------------------------------------------- 3. openssl ca

OPENSSL_CA_CONF = """\
[ ca ]
default_ca = CA_default

[ CA_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/cacert.pem
private_key = $dir/private/cakey.pem
serial = $dir/serial
default_md = sha256
default_days = 365
policy = policy_anything
copy_extensions = copy
unique_subject = no
x509_extensions = leaf_ext
preserve = no
email_in_dn = no

[ policy_anything ]
countryName = optional
stateOrProvinceName = optional
localityName = optional
organizationName = optional
organizationalUnitName = optional
commonName = supplied
emailAddress = optional

[ leaf_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def openssl_democa(folder: Path, size: int, rng: random.Random) -> Path:
    """A demoCA (P-256, unencrypted key) whose index.txt already has ``size`` entries."""
    (folder / "newcerts").mkdir(parents=True)
    (folder / "private").mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "private" / "cakey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    subprocess.run(["openssl", "req", "-new", "-x509", "-key", "private/cakey.pem", "-out",
                    "cacert.pem", "-days", "3650", "-subj",
                    "/C=GB/O=Example Ltd/CN=openssl ca benchmark P-256 CA", "-addext",
                    "basicConstraints=critical,CA:TRUE", "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign"],
                   cwd=folder, check=True, capture_output=True)
    (folder / "serial").write_text("1000\n")
    (folder / "index.txt.attr").write_text("unique_subject = no\n")
    now = dt.datetime.now(dt.UTC)
    lines = []
    for i in range(size):
        expires = now + dt.timedelta(days=rng.randrange(-365, 365))
        serial = authority.serial_hex(rng.getrandbits(126) | (1 << 126))
        roll = rng.random()
        status = "R" if roll < 0.03 else ("V" if expires > now else "E")
        revoked = ((expires - dt.timedelta(days=300)).strftime("%y%m%d%H%M%SZ") + ",superseded"
                   if status == "R" else "")
        lines.append(f"{status}\t{expires:%y%m%d%H%M%SZ}\t{revoked}\t{serial}\tunknown\t"
                     f"/C=GB/O=Example Ltd/OU=Video/CN=filler{i:06d}.example.com\n")
    (folder / "index.txt").write_text("".join(lines))
    conf = folder / "ca.cnf"
    conf.write_text(OPENSSL_CA_CONF.format(dir=folder))
    return conf


def write_requests(folder: Path, csrs: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i, csr in enumerate(csrs):
        path = folder / f"req{i:05d}.pem"
        path.write_bytes(csr)
        paths.append(path)
    return paths


def time_openssl_ca(confs: dict[int, Path], paths: list[Path], out_file: Path, *,
                    rounds: int) -> dict[int, list[float]]:
    """``openssl ca -batch`` once per request against each demoCA (keyed by index size), in
    alternating blocks so that drifting machine load hits every size alike: seconds per call."""
    latencies: dict[int, list[float]] = {size: [] for size in confs}
    cursor = dict.fromkeys(confs, 0)
    per_block = -(-len(paths) // rounds)
    for label in alternate([str(s) for s in confs], rounds):
        size = int(label)
        for path in paths[cursor[size]:cursor[size] + per_block]:
            t0 = time.perf_counter()
            subprocess.run(["openssl", "ca", "-batch", "-config", str(confs[size]),
                            "-in", str(path), "-out", str(out_file), "-notext"],
                           check=True, capture_output=True)
            latencies[size].append(time.perf_counter() - t0)
        cursor[size] += per_block
    return latencies


def bench_openssl_ca(sizes: list[int], csrs: list[bytes], workdir: Path, *, rounds: int,
                     seed: int) -> dict:
    log(f"openssl ca: sizes {sizes}, {len(csrs)} calls each")
    rng = random.Random(seed)
    base = workdir / "openssl-ca"
    paths = write_requests(base / "requests", csrs)
    confs = {size: openssl_democa(base / f"democa-{size}", size, rng) for size in sizes}
    load_start = loadavg()
    machine_cpu = MachineCpu()
    latencies = time_openssl_ca(confs, paths, base / "out.pem", rounds=rounds)
    load_end = loadavg()
    results = {str(size): {"existing_at_start": size, "calls": len(lat),
                           "ms_per_call": round(sum(lat) / len(lat) * 1e3, 3),
                           "latency": latency_summary(lat)}
               for size, lat in latencies.items()}
    small, large = str(min(sizes)), str(max(sizes))
    ratio = results[large]["ms_per_call"] / results[small]["ms_per_call"]
    log(f"  openssl ca {small}: {results[small]['ms_per_call']:.1f} ms/call, {large}: "
        f"{results[large]['ms_per_call']:.1f} ms/call, ratio {ratio:.1f}")
    return {"sizes": results, "ratio_large_vs_small": round(ratio, 3),
            "command": "openssl ca -batch -config ca.cnf -in REQ -out out.pem -notext",
            "loadavg_start": load_start, "loadavg_end": load_end,
            "machine_cpu_busy_percent": machine_cpu.busy_percent()}


# ---------------------------------------------------------------- report

def render_table(report: dict) -> str:
    lines = []
    cfg = report["config"]
    m = report["machine"]
    mode = "quick" if cfg["quick"] else "full"
    lines.append(f"pkiq signing benchmark - {report['started_at']} ({mode} run)")
    lines.append(f"machine: nproc {m['nproc']}, {m['cpu_model']}, load avg at start "
                 f"{report['loadavg_start']}, at end {report['loadavg_end']}")
    lines.append(f"openssl binary: {m['openssl_binary']}; cryptography {m['cryptography']} "
                 f"linked against {m['cryptography_openssl']}")
    lines.append("")
    lines.append(f"1. Throughput: {cfg['count']} CSRs per CA (request keys {cfg['request_key']}), "
                 "one transaction per certificate")
    head = (f"{'CA key':<8} {'db':<10} {'certs':>6} {'s':>8} {'certs/s':>8} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'pyca/s':>8} {'vs pyca':>8} {'openssl/s':>10} {'vs openssl':>10} "
            f"{'sign ms':>7} {'other ms':>8} {'box%':>5}  goal")
    lines.append(head)
    lines.append("-" * len(head))
    for r in report["throughput"]:
        goal = ""
        if "goal_met" in r:
            goal = f">={RAW_GOAL:.0%} of pyca: {'MET' if r['goal_met'] else 'NOT MET'}"
        lines.append(
            f"{r['key_type']:<8} {r['backend']:<10} {r['certificates']:>6} {r['seconds']:>8.1f} "
            f"{r['certs_per_s']:>8.1f} {r['latency']['p50_ms']:>7.2f} "
            f"{r['latency']['p99_ms']:>7.2f} {r['pyca_sign_per_s']:>8.1f} "
            f"{r['ratio_vs_pyca']:>8.1%} {r['openssl_sign_per_wall_s']:>10.1f} "
            f"{r['ratio_vs_openssl_wall']:>10.1%} {r['in_signer_ms_per_cert']:>7.2f} "
            f"{r['outside_signer_ms_per_cert']:>8.2f} "
            f"{r['machine_cpu_busy_percent'] or 0:>5.0f}  {goal}")
    lines.append("  pyca/s: the CA key's raw sign rate through cryptography (the library pkiq "
                 "signs with), one process, best of before/after the run: the yardstick;")
    lines.append("  openssl/s: `openssl speed -mr` one process, its signatures over wall-clock "
                 "seconds (it prints them over user CPU time), best of before/after;")
    lines.append("  sign ms: time per certificate inside signer.sign_certificate (DER + "
                 "signature); other ms: the rest (CSR checks, database, ORM);")
    one_core = 100 / (os.cpu_count() or 1)
    lines.append(f"  box%: whole-machine CPU busy while signing ({one_core:.0f}% = this "
                 "benchmark alone on one core).")
    if report["index_growth"]:
        lines.append("")
        lines.append(f"2. Index growth: P-256 CA, the same CSRs signed at each size in "
                     f"alternating blocks ({cfg['index_sign']}; {cfg['index_sign_unique']} with "
                     "unique_subject)")
        sizes = cfg["index_sizes"]
        head = (f"{'db':<10} {'unique_subject':<14} "
                + " ".join(f"{f'ms@{s}':>11}" for s in sizes) + f" {'ratio':>7} {'box%':>5}"
                "  goal")
        lines.append(head)
        lines.append("-" * len(head))
        for r in report["index_growth"]:
            cells = " ".join(f"{r['sizes'][str(s)]['ms_per_cert']:>11.3f}" for s in sizes)
            lines.append(f"{r['backend']:<10} {'yes' if r['unique_subject'] else 'no':<14} "
                         f"{cells} {r['ratio_large_vs_small']:>6.2f}x "
                         f"{r['machine_cpu_busy_percent'] or 0:>5.0f}  <=1.3x: "
                         f"{'MET' if r['goal_met'] else 'NOT MET'}")
    if report.get("openssl_ca"):
        r = report["openssl_ca"]
        sizes = cfg["index_sizes"]
        lines.append("")
        lines.append("3. openssl ca -batch (one process per certificate), index.txt entries:")
        lines.append("   " + ", ".join(f"{s}: {r['sizes'][str(s)]['ms_per_call']:.1f} ms/call"
                                      for s in sizes)
                     + f"; ratio {r['ratio_large_vs_small']:.1f}x")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, help="CSRs signed per CA (default 10000; "
                        "--quick: 200)")
    parser.add_argument("--quick", action="store_true",
                        help="small counts and short openssl speed runs: a smoke run")
    parser.add_argument("--postgres", action="store_true",
                        help="also run against PostgreSQL (a schema created and dropped here)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="server URL (default: $PKIQ_BENCH_POSTGRES_URL or the test URL)")
    parser.add_argument("--speed-seconds", type=int,
                        help="seconds per openssl speed / raw sign measurement (default 5; "
                        "--quick: 1)")
    parser.add_argument("--index-sizes", help="rows already in the table, comma separated "
                        "(default 1000,200000; --quick: 1000,20000)")
    parser.add_argument("--index-sign", type=int,
                        help="CSRs signed at each index size (default 1000; --quick: 100)")
    parser.add_argument("--index-sign-unique", type=int,
                        help="the same with unique_subject = yes, whose cost grows with the "
                        "index (default 200; --quick: 50)")
    parser.add_argument("--openssl-ca-calls", type=int,
                        help="openssl ca calls per index size (default 50; --quick: 10)")
    parser.add_argument("--no-openssl-ca", action="store_true",
                        help="skip the openssl ca comparison")
    parser.add_argument("--no-index-growth", action="store_true", help="skip part 2 and 3")
    parser.add_argument("--request-key", choices=("rsa2048", "ec-p256"), default="rsa2048",
                        help="request key type (default rsa2048, as the Expressway guide)")
    parser.add_argument("--key-types", default=",".join(CA_KEY_TYPES),
                        help="CA key types for part 1 (default rsa4096,ec-p256)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # bench/run hands every benchmark the same options
        print(f"bench_sign: ignoring options for other benchmarks: {' '.join(unknown)}",
              file=sys.stderr)
    quick = args.quick
    args.count = args.count or (200 if quick else 10000)
    args.speed_seconds = args.speed_seconds or (1 if quick else 5)
    args.index_sizes = sorted(int(s) for s in (
        args.index_sizes or ("1000,20000" if quick else "1000,200000")).split(","))
    args.index_sign = args.index_sign or (100 if quick else 1000)
    args.index_sign_unique = args.index_sign_unique or (50 if quick else 100)
    args.openssl_ca_calls = args.openssl_ca_calls or (10 if quick else 50)
    args.key_types = [k.strip() for k in args.key_types.split(",") if k.strip()]
    for k in args.key_types:
        if k not in CA_KEY_TYPES:
            parser.error(f"--key-types: {k!r} is not one of {', '.join(CA_KEY_TYPES)}")
    if len(args.index_sizes) != 2 or args.index_sizes[0] < 20:
        parser.error("--index-sizes takes two sizes, each at least 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("openssl"):
        print("the openssl binary is required", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    report: dict = {
        "benchmark": "sign",
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["bench/run", *(argv if argv is not None else sys.argv[1:])]),
        "config": {"count": args.count, "quick": args.quick, "postgres": args.postgres,
                   "speed_seconds": args.speed_seconds, "index_sizes": args.index_sizes,
                   "index_sign": args.index_sign,
                   "index_sign_unique": args.index_sign_unique,
                   "openssl_ca_calls": args.openssl_ca_calls,
                   "request_key": args.request_key, "profile": PROFILE,
                   "key_types": args.key_types},
        "machine": machine_facts(),
        "loadavg_start": loadavg(),
        "throughput": [], "index_growth": [], "openssl_ca": None,
    }
    backends = [Backend("sqlite")]
    if args.postgres:
        backends.append(Backend("postgresql", args.postgres_url))
        report["postgresql"] = postgres_facts(args.postgres_url)

    log(f"generating request keys ({args.request_key}) and {args.count} CSRs (untimed) ...")
    keys = make_request_keys(args.request_key, 24)
    csr_count = max(args.count + 5, args.index_sign + 11, args.index_sign_unique + 11,
                    args.openssl_ca_calls)
    csrs = make_csrs(csr_count, keys)

    with tempfile.TemporaryDirectory(prefix="pkiq-bench-") as tmp:
        workdir = Path(tmp)
        for key_type in args.key_types:
            report["throughput"].extend(bench_throughput(
                backends, key_type, csrs[:args.count], csrs[args.count:args.count + 5],
                workdir, args.speed_seconds))
        if not args.no_index_growth:
            for backend in backends:
                for unique_subject in (False, True):
                    n = args.index_sign_unique if unique_subject else args.index_sign
                    report["index_growth"].append(bench_index_growth(
                        backend, args.index_sizes, csrs[:n + 11], workdir,  # +1 filler DER,
                        unique_subject=unique_subject, rounds=10, seed=1234))  # +10 warm-up
            if not args.no_openssl_ca:
                report["openssl_ca"] = bench_openssl_ca(
                    args.index_sizes, csrs[:args.openssl_ca_calls], workdir, rounds=10,
                    seed=5678)

    report["loadavg_end"] = loadavg()
    report["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report["elapsed_seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    suffix = "-quick" if args.quick else ""
    path = args.results_dir / f"sign-{stamp}{suffix}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    shutil.copyfile(path, args.results_dir / f"sign-latest{suffix}.json")
    print(render_table(report))
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
