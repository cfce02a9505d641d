"""Rollouts carried out by real worker processes (over real Redis, or the embedded
filesystem broker) against fake Expressways (real HTTPS servers, tests/fake_expressway.py):
handed over by ``--queue``, retried by the task's own eta after a 5xx, picked up by the
rollouts tick when their message is lost; and the node CRL bundle fetch the real web app
records, which clears the ``crl-fetch`` drift."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import secrets
import time
import zipfile
from pathlib import Path

import pytest
import requests
from cryptography import x509
from sqlalchemy import select

from ca import nodes
from ca.models import BundleFetch, PushJob, Rollout
from ca.trust import fingerprint
from scheduler.schedule import ROLLOUT_TASK, ROLLOUTS_TICK_TASK
from service import drift, push
from shell.db import transaction
from shell.settings import Settings
from worker.celery_app import make_app, prepare

from .conftest import PASSPHRASE
from .test_node_push import PEERS, ROOT, active_cert, connect, estate, fakes
from .test_web_downloads import free_port, wait_for
from .test_worker import REDIS_URL, Service, redis_client  # noqa: F401 - the fixture

PASS = PASSPHRASE.encode()
TWO = PEERS[:2]
# The estate is built on pkiq.app's engine: one engine in the test process, as in a command.
# One combination each way keeps the file quick: Redis with PostgreSQL, the embedded broker
# with SQLite (the default deployment).
BROKERS = pytest.mark.parametrize("db_url,broker", [("postgresql", "redis"),
                                                    ("sqlite", "embedded")],
                                  indirect=True, ids=["redis-postgresql", "embedded-sqlite"])


@pytest.fixture
def broker(request):
    if request.param == "redis":
        request.getfixturevalue("redis_client")  # Redis must be up: fails, never skips
        return REDIS_URL
    return None


@pytest.fixture
def service(pkiq, db_url, broker, tmp_path):
    """pkiq processes on the test's database and data dir (the in-process ``pkiq`` builds
    the estate there), a queue of the test's own, retries after 1 s."""
    env = {**os.environ, "PKIQ_DATABASE_URL": db_url, "PKIQ_CA_PASSPHRASE": PASSPHRASE,
           "PKIQ_DATA_DIR": str(pkiq.app.settings.data_dir),
           "PKIQ_QUEUE": f"pkiq-push-{secrets.token_hex(4)}", "PKIQ_PUSH_RETRY_SECONDS": "1"}
    env.pop("PKIQ_BROKER_URL", None)
    if broker:
        env["PKIQ_BROKER_URL"] = broker
    svc = Service(env, tmp_path)
    yield svc
    svc.stop()


def queue_settings(service) -> Settings:
    env = service.env
    return Settings(data_dir=Path(env["PKIQ_DATA_DIR"]), database_url=env["PKIQ_DATABASE_URL"],
                    broker_url=env.get("PKIQ_BROKER_URL"), queue=env["PKIQ_QUEUE"])


def send(service, task: str, *args) -> None:
    """Send ``task`` by name on the service's broker and queue, as beat or the CLI does."""
    settings = queue_settings(service)
    prepare(settings)
    app = make_app(settings)
    try:
        app.send_task(task, args=list(args))
    finally:
        app.close()


def queued_messages(service, request) -> int:
    settings = queue_settings(service)
    if settings.broker_url:
        return request.getfixturevalue("redis_client").llen(settings.queue)
    folder = settings.queue_dir / "messages"  # <time>_<uuid>.<queue>.msg, worker.fs_transport
    return len(list(folder.glob(f"*.{settings.queue}.msg"))) if folder.exists() else 0


def start_worker(service) -> None:
    worker = service.start("worker", "-c", "1")
    wait_for(lambda: "ready." in service.logs() or worker.poll() is not None, seconds=60)
    assert worker.poll() is None, service.logs()


def wait_rollout(pkiq, service, rollout_id: int, states: tuple[str, ...],
                 seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        view = push.show(pkiq.app, rollout_id)
        if view["state"] in states:
            return view
        assert time.monotonic() < deadline, (view, service.logs())
        time.sleep(0.05)


def assert_each_holds_its_own(pkiq, boxes) -> None:
    for name, box in boxes.items():
        mine = active_cert(pkiq, name)
        assert fingerprint(box.server_cert) == fingerprint(mine)  # its own, not a peer's
        assert name in mine.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert fingerprint(box.presented) == fingerprint(mine)  # after its restart
        assert box.restarts == 1


# ---------------------------------------------------------------- the workers

@BROKERS
def test_a_queued_rollout_is_carried_out_by_a_worker(pkiq, clock, service):
    estate(pkiq, pkiq.app.sessions, clock, TWO)
    with fakes(TWO) as boxes:
        connect(pkiq, boxes)
        start_worker(service)
        handed = service.cli("cluster", "rollout", "edge", "--restart", "--queue", "--json")
        assert handed.returncode == 0, (handed.stdout, handed.stderr)
        view = json.loads(handed.stdout)
        assert view["peers"] == TWO
        assert view["jobs"][1]["state"] == "queued"  # the CLI pushed nothing itself

        done = wait_rollout(pkiq, service, view["id"], ("done", "stopped", "paused"))
        assert done["state"] == "done", (done, service.logs())
        assert [j["state"] for j in done["jobs"]] == ["done", "done"]
        assert all(j["attempts"] == 1 for j in done["jobs"])
        assert all(j["result"]["handshake"] == "presents the new certificate"
                   for j in done["jobs"])
        assert_each_holds_its_own(pkiq, boxes)
        assert f"rollout {view['id']}: done" in service.logs()  # the worker's own word


@BROKERS
def test_a_5xx_makes_the_worker_wait_and_its_task_finishes_later(pkiq, clock,
                                                                 service):
    estate(pkiq, pkiq.app.sessions, clock, TWO)
    with fakes(TWO) as boxes:
        connect(pkiq, boxes)
        first = boxes[TWO[0]]
        first.fail(ROOT, 503, times=1, message="Service temporarily unavailable")
        start_worker(service)
        rollout = push.start(pkiq.app, cluster="edge", restart=True)
        send(service, ROLLOUT_TASK, rollout["id"])

        # No beat runs: only the task's own message, sent again for its retry time,
        # can take the rollout on from here.
        waiting = wait_rollout(pkiq, service, rollout["id"], ("waiting", "done", "stopped"))
        assert waiting["state"] == "waiting", (waiting, service.logs())
        job = waiting["jobs"][0]
        assert job["state"] == "retrying" and job["attempts"] == 1
        assert "503" in job["error"] and "Service temporarily unavailable" in job["error"]
        assert waiting["jobs"][1]["state"] == "queued"

        done = wait_rollout(pkiq, service, rollout["id"], ("done", "stopped", "paused"),
                            seconds=60)
        assert done["state"] == "done", (done, service.logs())
        assert [j["attempts"] for j in done["jobs"]] == [2, 1]
        assert done["jobs"][0]["error"] is None
        assert [s.status for s in first.requests if s.path == ROOT][0] == 503
        assert_each_holds_its_own(pkiq, boxes)


@BROKERS
def test_the_rollouts_tick_finishes_a_waiting_rollout_whose_message_was_lost(
        pkiq, clock, service, request):
    estate(pkiq, pkiq.app.sessions, clock, TWO)
    with fakes(TWO) as boxes:
        connect(pkiq, boxes)
        boxes[TWO[0]].fail(ROOT, 503, times=1)
        rollout = push.start(pkiq.app, cluster="edge", restart=True)
        # Advanced once in this process, which sends no message: left waiting.
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASS)
        assert view["state"] == "waiting" and view["jobs"][0]["attempts"] == 1
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        with transaction(pkiq.app.sessions) as session:
            row = session.get(Rollout, rollout["id"])
            row.next_try_at = past
            for job in session.scalars(select(PushJob).where(PushJob.rollout_id == row.id)):
                if job.state == "retrying":
                    job.next_try_at = past
        assert queued_messages(service, request) == 0

        start_worker(service)
        time.sleep(1.5)  # a worker alone has nothing to take it on
        assert push.show(pkiq.app, rollout["id"])["state"] == "waiting"

        send(service, ROLLOUTS_TICK_TASK)  # what beat sends every store tick
        done = wait_rollout(pkiq, service, rollout["id"], ("done", "stopped", "paused"))
        assert done["state"] == "done", (done, service.logs())
        assert [j["attempts"] for j in done["jobs"]] == [2, 1]
        assert_each_holds_its_own(pkiq, boxes)


# ---------------------------------------------------------------- the web app

def test_the_web_app_records_a_node_bundle_fetch_and_it_clears_the_drift(
        pkiq, clock, db_url, tmp_path):
    estate(pkiq, pkiq.app.sessions, clock, TWO)
    node, other = TWO
    with fakes(TWO) as boxes:
        connect(pkiq, boxes)  # the node's API settings made at T0: the fetch is due from then
        clock.advance(hours=27)
        found = {r["node"]: {f["kind"] for f in r["drift"]}
                 for r in drift.check(pkiq.app, passphrase=PASS)}
        assert "crl-fetch" in found[node] and "crl-fetch" in found[other]

        port = free_port()
        web = Service({**os.environ, "PKIQ_DATABASE_URL": db_url,
                       "PKIQ_DATA_DIR": str(pkiq.app.settings.data_dir),
                       "PKIQ_WEB_PORT": str(port)}, tmp_path)
        try:
            process = web.start("web")
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return requests.get(f"{url}/healthz", timeout=1).status_code == 200
                except requests.ConnectionError:
                    assert process.poll() is None, web.logs()
                    return False

            wait_for(up, seconds=30)
            before = dt.datetime.now(dt.UTC)
            for _ in range(2):  # a node polling again within the minute is written once
                got = requests.get(f"{url}/nodes/{node}/crls.zip", timeout=10)
                assert got.status_code == 200, got.text
                with zipfile.ZipFile(io.BytesIO(got.content)) as archive:
                    assert archive.namelist()
        finally:
            web.stop()

        with transaction(pkiq.app.sessions) as session:
            rows = {r.node_id: r for r in session.scalars(select(BundleFetch))}
            mine = rows.pop(nodes.get_node(session, node).id)
            assert rows == {}  # the other node fetched nothing
            fetched_at = mine.fetched_at
            assert mine.count == 1 and mine.path == f"/nodes/{node}/crls.zip"
            assert mine.remote == "127.0.0.1"
        assert before - dt.timedelta(seconds=5) <= fetched_at <= dt.datetime.now(dt.UTC)

        # more than 26 h after the node was set up, less than 26 h after its fetch
        clock.now = fetched_at + dt.timedelta(hours=25)
        found = {r["node"]: {f["kind"] for f in r["drift"]}
                 for r in drift.check(pkiq.app, passphrase=PASS)}
        assert "crl-fetch" not in found[node]
        assert "crl-fetch" in found[other]
        # and once that fetch is more than 26 h old, it is drift again
        clock.now = fetched_at + dt.timedelta(hours=27)
        [report] = drift.check(pkiq.app, node, passphrase=PASS)
        [stale] = [f for f in report["drift"] if f["kind"] == "crl-fetch"]
        assert f"{fetched_at:%Y-%m-%d %H:%M}Z" in stale["text"]


# ---------------------------------------------------------------- two engines, one SQLite file

@pytest.mark.parametrize("db_url,broker", [("sqlite", "embedded")], indirect=True)
def test_a_worker_that_signed_then_pushes_keeps_its_commits_on_sqlite(pkiq, clock, service):
    """The default deployment (SQLite, the embedded queue): one worker process first runs a
    task on the engine of worker.tasks.process_sessions (the reconciler, as beat sends it
    every minute), then a rollout on the ServiceContext of worker.tasks._service. What it
    commits must be what every other pkiq process reads. (It did not while the second
    engine's start-up read the database header with open() and close(): the close dropped
    the process's POSIX locks on the file, the next pkiq command to exit took itself for the
    last user and deleted the WAL, and the worker's later commits went to a deleted file.)"""
    estate(pkiq, pkiq.app.sessions, clock, TWO)
    with fakes(TWO) as boxes:
        connect(pkiq, boxes)
        pkiq.app.close()  # from here on only pkiq processes use the database
        start_worker(service)
        send(service, "worker.tasks.reconcile")
        wait_for(lambda: "worker.tasks.reconcile" in service.logs()
                 and "succeeded" in service.logs(), seconds=30)
        handed = service.cli("cluster", "rollout", "edge", "--restart", "--queue", "--json")
        assert handed.returncode == 0, handed.stderr
        rollout_id = json.loads(handed.stdout)["id"]
        deadline = time.monotonic() + 60
        while f"rollout {rollout_id}: " not in service.logs():  # the worker finished it
            assert time.monotonic() < deadline, service.logs()
            shown = service.cli("rollout", "show", rollout_id, "--json")  # a command exits
            assert shown.returncode == 0, shown.stderr
            time.sleep(0.5)
        assert f"rollout {rollout_id}: done" in service.logs(), service.logs()
        seen = json.loads(service.cli("rollout", "show", rollout_id, "--json").stdout)
        assert seen["state"] == "done", seen
