"""The queue's promise under failure: 2,000 jobs through 4 worker processes over real Redis
and real PostgreSQL, one worker SIGKILLed mid-run, Redis restarted once (it keeps nothing on
disk, so queued messages are lost). Every job must end issued exactly once, with distinct
serials, and nothing may stay stuck past the reconciler's timeout."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text

from .conftest import cached_key, make_csr
from .test_worker import Service

JOBS = int(os.environ.get("PKIQ_RELIABILITY_JOBS", "2000"))
WORKERS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server of the test's own, so restarting it disturbs nobody else."""

    def __init__(self, folder: Path):
        self.port, self.folder = free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        subprocess.run([shutil.which("redis-server") or "redis-server", "--daemonize", "yes",
                        "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                        "--appendonly", "no", "--dir", str(self.folder),
                        "--pidfile", str(self.folder / "redis.pid"),
                        "--logfile", str(self.folder / "redis.log")], check=True)
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self):
        with contextlib.suppress(redis.ConnectionError):  # shutdown drops our connection
            redis.Redis(port=self.port).shutdown(nosave=True)


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def counts(db_url: str) -> dict[str, int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select state, count(*) from signing_jobs group by state"))
            return dict(rows.all())
    finally:
        engine.dispose()


def test_jobs_survive_a_killed_worker_and_a_redis_restart(request, tmp_path, private_redis):
    admin = request.getfixturevalue("postgres_admin")
    from .conftest import _postgres_url

    db_url, schema = _postgres_url(admin)
    request.addfinalizer(lambda: _drop(admin, schema))
    env = {**os.environ, "PKIQ_DATABASE_URL": db_url, "PKIQ_CA_PASSPHRASE": "reliability suite",
           "PKIQ_DATA_DIR": str(tmp_path / "data"), "PKIQ_BROKER_URL": private_redis.url,
           "PKIQ_QUEUE": "pkiq-reliability", "PKIQ_JOB_TIMEOUT_SECONDS": "10",
           "PKIQ_RECONCILE_SECONDS": "2"}
    svc = Service(env, tmp_path)
    request.addfinalizer(svc.stop)
    # the policy refuses one request at signing (a wildcard is refused at submit already)
    assert svc.cli("ca", "create", "Root", "--subject", "/O=Example/CN=Reliability Root",
                   "--key-type", "ec-p256", "--policy",
                   "organizationName=match,commonName=supplied").returncode == 0

    folder = tmp_path / "requests"
    folder.mkdir()
    key = cached_key("ec-p256")
    files = []
    for i in range(JOBS):
        path = folder / f"r{i:05d}.pem"
        path.write_bytes(make_csr(f"node{i:05d}.example.com", key=key))
        files.append(path)
    garbage = folder / "r00500-garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nMIIBnot a request\n")
    other_org = folder / "r01000-other-org.pem"
    other_org.write_bytes(make_csr("other.example.com", key=key,
                                   extra_name={NameOID.ORGANIZATION_NAME: "Other"}))
    batch = files[:500] + [garbage] + files[500:1000] + [other_org] + files[1000:]

    workers = [svc.start("worker", "-c", "1", "-n", f"w{i}@%h") for i in range(WORKERS)]
    svc.start("beat")
    list_file = tmp_path / "submit.json"
    with open(list_file, "w") as out:
        submitter = subprocess.Popen(
            [sys.executable, "-m", "pkiq", "submit", *map(str, batch), "--ca", "Root", "--json"],
            env=env, stdout=out, stderr=subprocess.PIPE, text=True)

        killed = restarted = False
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            state = counts(db_url)
            issued = state.get("issued", 0)
            if not killed and issued >= JOBS // 5:
                os.killpg(workers[0].pid, signal.SIGKILL)  # the worker and its pool child
                killed = True
            if killed and not restarted and issued >= JOBS // 2:
                private_redis.stop()
                time.sleep(1)
                private_redis.start()
                restarted = True
            if submitter.poll() is not None and restarted and issued + state.get(
                    "failed", 0) >= JOBS + 1:
                break
            time.sleep(0.5)
        stderr = submitter.communicate(timeout=60)[1]

    assert killed and restarted, f"the run ended before the faults ({counts(db_url)})"
    submitted = json.loads(list_file.read_text())
    refused = [r for r in submitted if r["state"] == "refused"]
    assert [Path(r["file"]).name for r in refused] == ["r00500-garbage.pem"], stderr
    assert "not a certificate request" in refused[0]["error"]

    engine = create_engine(db_url)
    with engine.connect() as conn:
        states = dict(conn.execute(text(
            "select state, count(*) from signing_jobs group by state")).all())
        assert states == {"issued": JOBS, "failed": 1}, svc.logs()
        failed = conn.execute(text("select error from signing_jobs where state = 'failed'"))
        assert "must match the CA" in failed.scalar_one()
        serials = conn.execute(text("select serial from signing_jobs where state = 'issued'"))
        assert len(set(serials.scalars())) == JOBS
        certs = conn.execute(text("select count(*), count(distinct serial) from certificates"))
        assert tuple(certs.one()) == (JOBS, JOBS)  # exactly once: no certificate twice
    engine.dispose()
    assert all(w.poll() is None for w in workers[1:]), "a surviving worker died"


def _drop(admin, schema):
    with admin.connect() as conn:
        conn.execute(text(f'drop schema "{schema}" cascade'))
