"""/metrics over a real server (families read from the database at scrape time, the sign
latency histogram from real worker processes' files), and log lines as text or JSON from
real processes."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from service import ServiceContext, cas
from service import jobs as job_service
from shell import logs, metrics
from shell.settings import Settings

from .conftest import PASSPHRASE, make_csr
from .test_web_downloads import CRL_HOURS, PASS, Served
from .test_worker import REDIS_URL, Service, redis_client, write_csrs  # noqa: F401


def scrape(served: Served, **headers) -> dict:
    """{family name: {(sample name, sorted labels): value}} from /metrics."""
    answer = served.get("/metrics", **headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    found: dict = {}
    for family in text_string_to_metric_families(answer.text):
        samples = found.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, sample: str | None = None, **labels) -> float:
    return found[name][(sample or name, tuple(sorted(labels.items())))]


def make_ctx(tmp_path, clock, db_url=None, **settings) -> ServiceContext:
    return ServiceContext(Settings(data_dir=tmp_path / "data",
                                   database_url=db_url or f"sqlite:///{tmp_path / 'pkiq.db'}",
                                   **settings), clock)


@pytest.fixture
def ctx(db_url, tmp_path, clock):
    context = make_ctx(tmp_path, clock, db_url)
    cas.create_ca(context, name="Root", subject="/C=GB/O=Example/CN=Example Root CA",
                  key_type="ec-p256", days=3650, passphrase=PASS,
                  changes=cas.CaChanges(crl_hours=CRL_HOURS))
    cas.generate_crl(context, "Root", passphrase=PASS)
    yield context
    context.close()


def test_metrics_read_from_the_database(ctx, clock):
    rows, _warning = job_service.queue_requests(
        ctx, "Root", [make_csr(f"m{i}.example.com") for i in range(3)],
        profile="webserver", requester="alice")
    assert [r["state"] for r in rows] == ["queued"] * 3
    dt_seconds = 90
    clock.advance(seconds=dt_seconds)
    served = Served(ctx)
    try:
        found = scrape(served)
    finally:
        served.close()
    assert value(found, "pkiq_up") == 1
    assert value(found, "pkiq_scrape_error", family="jobs") == 0
    assert value(found, "pkiq_jobs", state="queued") == 3
    assert value(found, "pkiq_jobs", state="issued") == 0
    assert value(found, "pkiq_queue_depth") == 3
    assert value(found, "pkiq_queue_oldest_seconds") == pytest.approx(dt_seconds, abs=1)
    crl = {"issuer": "/C=GB/O=Example/CN=Example Root CA", "scope": "complete",
           "origin": "pkiq", "ca": "Root"}
    assert value(found, "pkiq_crl_age_seconds", **crl) == pytest.approx(dt_seconds, abs=1)
    assert value(found, "pkiq_crl_next_update_seconds", **crl) == pytest.approx(
        CRL_HOURS * 3600 - dt_seconds, abs=1)
    assert value(found, "pkiq_rollouts", state="stopped") == 0
    assert "pkiq_sign_latency_seconds" not in found  # no worker has signed anything yet


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_metrics_token_is_asked_for_when_set(tmp_path, clock, db_url):
    token = secrets.token_urlsafe(24)
    context = make_ctx(tmp_path, clock, db_url, metrics_token=token)
    served = Served(context)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                        {"Authorization": f"Basic {token}"}):
            answer = served.get("/metrics", **headers)
            assert answer.status_code == 401, headers
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert token not in answer.text
        assert value(scrape(served, Authorization=f"Bearer {token}"), "pkiq_up") == 1
        assert served.get("/healthz").status_code == 200  # the rest stays public
    finally:
        served.close()
        context.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_database_that_does_not_answer_is_pkiq_up_0_not_a_failed_scrape(tmp_path, clock):
    url = f"postgresql://pkiq@127.0.0.1:{_closed_port()}/pkiq"
    context = make_ctx(tmp_path, clock, url)
    served = Served(context)
    try:
        started = time.monotonic()
        found = scrape(served)
        assert time.monotonic() - started < 10
    finally:
        served.close()
    assert value(found, "pkiq_up") == 0
    assert value(found, "pkiq_scrape_error", family="jobs") == 1
    assert value(found, "pkiq_scrape_error", family="rollouts") == 1
    assert "pkiq_jobs" not in found and "pkiq_crl_age_seconds" not in found


def test_the_dead_processes_files_of_this_host_are_cleaned(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = metrics.host_tag()
    names = [f"histogram_{host}-{dead_pid}.db", f"histogram_{host}-{os.getpid()}.db",
             f"histogram_otherhost-{dead_pid}.db", "counter_1.db"]
    for name in names:
        (folder / name).write_bytes(b"")
    assert metrics.clean_dead(folder) == [names[0]]
    assert sorted(p.name for p in folder.iterdir()) == sorted(names[1:])


@pytest.fixture
def service(db_url, tmp_path, request):
    request.getfixturevalue("redis_client")
    env = {**os.environ, "PKIQ_DATABASE_URL": db_url, "PKIQ_CA_PASSPHRASE": PASSPHRASE,
           "PKIQ_DATA_DIR": str(tmp_path / "data"), "PKIQ_BROKER_URL": REDIS_URL,
           "PKIQ_QUEUE": f"pkiq-test-{secrets.token_hex(4)}", "PKIQ_LOG_FORMAT": "json"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    svc = Service(env, tmp_path)
    created = svc.cli("ca", "create", "Root", "--subject", "/CN=Queue Root", "--key-type",
                      "ec-p256")
    assert created.returncode == 0, created.stderr
    yield svc
    svc.stop()


def test_worker_processes_sign_latency_shows_in_the_webs_metrics(service, tmp_path, db_url):
    """Two worker processes sign; the web app (another process) serves their histogram,
    added up; and the workers' log lines are JSON, naming the task and the job."""
    service.start("worker", "-c", "2")
    files = write_csrs(tmp_path, 12)
    done = service.cli("submit", *files, "--ca", "Root", "--wait", "--timeout", "120",
                             "--json")
    assert done.returncode == 0, (done.stderr, service.logs())
    context = ServiceContext(Settings(data_dir=tmp_path / "data", database_url=db_url))
    served = Served(context)
    try:
        found = scrape(served)
    finally:
        served.close()
        context.close()
    assert value(found, "pkiq_sign_latency_seconds", "pkiq_sign_latency_seconds_count",
                 ca="Root") == 12
    assert value(found, "pkiq_sign_latency_seconds", "pkiq_sign_latency_seconds_bucket",
                 ca="Root", le="+Inf") == 12
    assert 0 < value(found, "pkiq_sign_latency_seconds", "pkiq_sign_latency_seconds_sum",
                     ca="Root") < 12 * 120
    assert value(found, "pkiq_jobs", state="issued") == 12
    assert value(found, "pkiq_queue_depth") == 0
    written = list((tmp_path / "data" / "metrics").glob("histogram_*.db"))
    assert written and all(metrics.host_tag() in p.name for p in written)

    service.stop()
    lines = [line for line in service.logs().splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in lines]
    assert parsed and all({"time", "level", "logger", "message"} <= set(p) for p in parsed)
    signed = [p for p in parsed if p["logger"] == "pkiq.worker" and "issued" in p["message"]]
    assert signed and all(p["task"] == "worker.tasks.sign_jobs" and p["task_id"]
                          for p in signed)
    assert PASSPHRASE not in service.logs()


def test_json_lines_carry_the_context_and_never_a_password_in_a_url():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("json", logging.INFO, stream)
        log = logging.getLogger("tests.pkiq")
        with logs.log_context(job_id=7, ca="Root"):
            log.warning("cannot reach redis://:s3cret@redis:6379/0 for job %d", 7,
                        extra={"node": "expe1.example.com", "body": "not a context key"})
        log.info("outside")
        try:
            raise ValueError("postgresql://pkiq:hunter2@db/pkiq")
        except ValueError:
            log.exception("failed", extra={"distribution_point": "http://u:pw@x/crl"})
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "tests.pkiq"
    assert first["job_id"] == 7 and first["ca"] == "Root" and first["node"] == "expe1.example.com"
    assert first["message"] == "cannot reach redis://:***@redis:6379/0 for job 7"
    assert "body" not in first and first["time"].endswith("Z")
    assert "job_id" not in second and second["message"] == "outside"
    assert "hunter2" not in third["exception"] and "pw@" not in third["distribution_point"]


def test_text_lines_put_the_context_after_the_message():
    record = logging.LogRecord("pkiq.worker", logging.INFO, __file__, 1, "job %s done", (3,),
                               None)
    with logs.log_context(job_id=3, ca="Root"):
        line = logs.TextFormatter().format(record)
    assert line.endswith("INFO pkiq.worker: job 3 done [job_id=3 ca=Root]")


def test_a_bad_log_format_is_one_settings_error(tmp_path):
    env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data"), "PKIQ_LOG_FORMAT": "xml"}
    done = subprocess.run([sys.executable, "-m", "pkiq", "ca", "list"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "PKIQ_LOG_FORMAT='xml'" in done.stderr and "text or json" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_web_process_logs_json_lines(tmp_path):
    port = _closed_port()
    env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data"), "PKIQ_LOG_FORMAT": "json"}
    env.pop("PKIQ_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "pkiq", "web", "--port", str(port),
                             "--access-log"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{port}/ca/Nobody.crl", timeout=5
                            ).status_code == 404
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(p["logger"] == "uvicorn.access" and "/healthz" in p["message"] for p in lines)
    assert any(p["logger"] == "uvicorn.error" for p in lines)
