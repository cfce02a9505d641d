"""Real worker processes over real brokers (Redis, and the embedded filesystem broker)
against real databases: jobs go in through the CLI, certificates come out exactly once."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from ca import authority, jobs
from shell.db import transaction

from .conftest import PASSPHRASE, make_csr
from .domain import PASS, new_ca

REDIS_URL = os.environ.get("PKIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_client():
    """Redis must be up: an unreachable server fails the run, it does not skip."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    return client


class Service:
    """pkiq processes sharing one database and broker, stopped at the end of the test."""

    def __init__(self, env: dict, folder: Path):
        self.env, self.folder, self.procs = env, folder, []

    def cli(self, *args, timeout=180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pkiq", *map(str, args)], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args) -> subprocess.Popen:
        with open(self.folder / f"proc{len(self.procs)}.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "pkiq", *args], env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.folder.glob("proc*.log")))


@pytest.fixture(params=["redis", "embedded"])
def service(request, db_url, tmp_path):
    env = {**os.environ, "PKIQ_DATABASE_URL": db_url, "PKIQ_CA_PASSPHRASE": PASSPHRASE,
           "PKIQ_DATA_DIR": str(tmp_path / "data"),
           "PKIQ_QUEUE": f"pkiq-test-{secrets.token_hex(4)}"}
    if request.param == "redis":
        request.getfixturevalue("redis_client")
        env["PKIQ_BROKER_URL"] = REDIS_URL
    svc = Service(env, tmp_path)
    created = svc.cli("ca", "create", "Root", "--subject", "/CN=Queue Root", "--key-type",
                      "ec-p256")
    assert created.returncode == 0, created.stderr
    yield svc
    svc.stop()


def write_csrs(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"req{i:03d}.pem"
        path.write_bytes(make_csr(f"peer{i:03d}.example.com"))
        paths.append(path)
    return paths


def test_a_batch_through_two_workers_with_bad_requests_in_the_middle(service, tmp_path):
    worker = service.start("worker", "-c", "2")
    good = write_csrs(tmp_path, 20)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n")
    wildcard = tmp_path / "wild.pem"
    wildcard.write_bytes(make_csr("*.example.com"))
    files = good[:10] + [garbage, wildcard] + good[10:]
    done = service.cli("submit", *files, "--ca", "Root", "--wait", "--timeout", "120", "--json")
    assert done.returncode == 9, (done.stderr, service.logs())  # partial: two did not issue
    results = {Path(r["file"]).name: r for r in json.loads(done.stdout)}
    assert results["garbage.pem"]["state"] == "refused"
    assert "not a certificate request" in results["garbage.pem"]["error"]
    # refused at submit, as the profile's rules are checked before anything is queued
    assert results["wild.pem"]["state"] == "refused" and "wildcard" in results["wild.pem"]["error"]
    issued = [r for name, r in results.items() if name.startswith("req")]
    assert [r["state"] for r in issued] == ["issued"] * 20, service.logs()
    assert len({r["serial"] for r in issued}) == 20
    assert worker.poll() is None  # the bad requests did not hurt the worker
    again = service.cli("submit", good[0], "--ca", "Root", "--json")
    [row] = json.loads(again.stdout)
    assert row["new"] is False and row["serial"] == results["req000.pem"]["serial"]


def test_lost_messages_are_resent_by_the_reconciler(service, tmp_path, request):
    """Jobs queued while no worker runs lose their messages (as a Redis restart, or the
    embedded queue wiped); the reconciler on beat sends them again after the timeout."""
    files = write_csrs(tmp_path, 5)
    queued = service.cli("submit", *files, "--ca", "Root", "--json")
    assert queued.returncode == 0, queued.stderr
    queue = service.env["PKIQ_QUEUE"]
    if "PKIQ_BROKER_URL" in service.env:
        client = request.getfixturevalue("redis_client")
        assert client.llen(queue) == 1  # one message names the five jobs
        client.delete(queue)
    else:
        messages = Path(service.env["PKIQ_DATA_DIR"]) / "queue" / "messages"
        assert len(list(messages.iterdir())) == 1
        for path in messages.iterdir():
            path.unlink()
    service.env.update(PKIQ_JOB_TIMEOUT_SECONDS="10", PKIQ_RECONCILE_SECONDS="1")
    service.start("serve", "-c", "1")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        listing = json.loads(service.cli("jobs", "list", "--json").stdout)
        if all(j["state"] == "issued" for j in listing):
            break
        time.sleep(1)
    assert [j["state"] for j in listing] == ["issued"] * 5, service.logs()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: one transaction
def test_a_worker_killed_while_signing_leaves_its_claim_to_the_reconciler(service, tmp_path,
                                                                         db_url):
    """On SQLite a worker signs after its claim has committed (``service.jobs.sign_batch``):
    SIGKILLed then, it leaves jobs ``signing``. Once the timeout has passed the reconciler
    gives the claim up and re-sends them, and each job still ends with one certificate."""
    import sqlite3

    slow = service.cli("ca", "create", "Slow", "--subject", "/CN=Slow Root", "--key-type",
                       "rsa4096")
    assert slow.returncode == 0, slow.stderr
    files = write_csrs(tmp_path, 200)
    queued = service.cli("submit", *files, "--ca", "Slow", "--json")
    assert queued.returncode == 0, queued.stderr
    database = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=30)

    def count(where: str) -> int:
        return database.execute(f"SELECT count(*) FROM signing_jobs WHERE {where}").fetchone()[0]

    worker = service.start("worker", "-c", "1")
    deadline = time.monotonic() + 120
    while count("state = 'signing'") == 0 and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(worker.pid, signal.SIGKILL)  # mid-batch: claimed, signing, nothing recorded
    worker.wait()
    stranded = count("state = 'signing'")
    assert stranded > 0, service.logs()
    service.env.update(PKIQ_JOB_TIMEOUT_SECONDS="10", PKIQ_RECONCILE_SECONDS="1")
    service.start("serve", "-c", "1")
    deadline = time.monotonic() + 120
    while count("state != 'issued'") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert count("state = 'issued'") == 200, service.logs()
    assert count("attempts = 2") == stranded and count("attempts = 1") == 200 - stranded
    certificates = database.execute("SELECT count(*), count(DISTINCT serial) FROM "
                                    "certificates WHERE ca_id = (SELECT id FROM "
                                    "certificate_authorities WHERE name = 'Slow')").fetchone()
    assert certificates == (200, 200)  # one each: the dead worker's signatures went nowhere
    database.close()


def test_a_batch_that_breaks_is_signed_one_job_at_a_time(sessions, clock, monkeypatch):
    """A fault no job's own error explains (here a bug for one request) rolls the batch back;
    the task then signs the jobs one per transaction, so only the faulty one is left queued
    (for the reconciler), and raises its error at the end."""
    from worker import tasks

    new_ca(sessions, clock)
    with transaction(sessions) as session:
        done = jobs.submit_many(session, authority.get_ca(session, "Root"),
                                [make_csr(f"{n}.example.com") for n in ("a", "poison", "b")],
                                profile="webserver", requester="t", now=clock())
        ids = [d.job.id for d in done]
    real = jobs.sign_csr

    def buggy(session, ca, signer, csr_der, **kw):
        if b"poison" in csr_der:
            raise ValueError("a bug")
        return real(session, ca, signer, csr_der, **kw)

    monkeypatch.setattr(jobs, "sign_csr", buggy)
    monkeypatch.setattr(tasks, "process_sessions", lambda: sessions)
    monkeypatch.setattr(tasks, "signer_for", lambda ca: authority.load_signer(ca, PASS))
    monkeypatch.setattr(tasks, "_lease", lambda: jobs.CLAIM_LEASE)
    with pytest.raises(ValueError, match="a bug"):
        tasks.sign_jobs(ids)
    with transaction(sessions) as session:
        assert [jobs.get_job(session, i).state for i in ids] == ["issued", "queued", "issued"]
    with pytest.raises(ValueError, match="a bug"):  # redelivered: the faulty one alone again
        tasks.sign_jobs(ids)
    with transaction(sessions) as session:
        assert [jobs.get_job(session, i).attempts for i in ids] == [1, 0, 1]


def test_the_crl_tick_task_returns_what_each_own_crl_came_to_as_json(sessions, clock,
                                                                     monkeypatch, tmp_path):
    from ca import crl_config
    from ca.errors import WrongPassphrase
    from shell.settings import Settings
    from worker import tasks
    from worker.celery_app import make_app

    make_app(Settings(data_dir=tmp_path))  # the current app, whose settings the task reads
    new_ca(sessions, clock)
    new_ca(sessions, clock, name="Locked")
    with transaction(sessions) as session:
        crl_config.update_settings(session, clock(), enabled=False)

    def signer_for(ca):
        if ca.name == "Locked":
            raise WrongPassphrase("no passphrase for CA 'Locked'")
        return authority.load_signer(ca, PASS)

    monkeypatch.setattr(tasks, "process_sessions", lambda: sessions)
    monkeypatch.setattr(tasks, "signer_for", signer_for)
    monkeypatch.setattr(tasks, "utc_now", clock)
    result = json.loads(json.dumps(tasks.crl_tick()))
    assert result["own_crls"] == [
        {"ca": "Root", "crl_number": 1, "reason": "it has no CRL yet", "error": None},
        {"ca": "Locked", "crl_number": None, "reason": "it has no CRL yet",
         "error": "no passphrase for CA 'Locked'"}]
    assert result["alerted"] == ["own-renew:Locked"]
