"""The Celery app is built by a factory: importing creates nothing, the beat schedule is
registered from where it is declared, and the folders the service needs are made by the
entry points, ``celery -A worker ...`` included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scheduler.schedule import CRL_TICK_TASK
from shell.settings import Settings
from worker.celery_app import RECONCILE_TASK, SIGN_TASK, make_app

from .test_worker import REDIS_URL


def test_importing_every_package_creates_and_connects_nothing(tmp_path):
    data = tmp_path / "not-yet"
    code = ("import pkiq.cli, pkiq.cli_jobs, pkiq.cli_crl, pkiq.cli_ca, service.jobs, "
            "worker, worker.celery_app, worker.tasks, scheduler.tick\n"
            "from celery.app.utils import find_app\n"
            "app = find_app('worker')\n"  # what `celery -A worker` does
            "print(type(app).__name__, app.conf.pkiq_settings.data_dir)\n")
    env = {**os.environ, "PKIQ_DATA_DIR": str(data), "PKIQ_BROKER_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Celery", str(data)]
    assert not data.exists()


def test_beat_schedule_is_registered_and_names_real_tasks(tmp_path):
    settings = Settings(data_dir=tmp_path, reconcile_seconds=7, crl_tick_seconds=11)
    app = make_app(settings)
    schedule = app.conf.beat_schedule
    assert schedule["reconcile-signing-jobs"] == {"task": RECONCILE_TASK, "schedule": 7.0}
    assert schedule["crl-tick"] == {"task": CRL_TICK_TASK, "schedule": 11.0}
    app.loader.import_default_modules()
    assert {SIGN_TASK, RECONCILE_TASK, CRL_TICK_TASK} <= set(app.tasks)
    assert not (tmp_path / "queue").exists()  # the factory made no folder


def _run_until(args: list[str], env: dict, log: Path, ready, timeout: float = 60) -> str:
    """Start a process, wait until ``ready()``, stop it; return its output."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        return log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _env(tmp_path: Path, data: Path) -> dict:
    env = {**os.environ, "PKIQ_DATA_DIR": str(data),
           "PKIQ_DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'pkiq.db'}"}
    env.pop("PKIQ_BROKER_URL", None)
    return env


def test_celery_beat_makes_the_data_dir_it_keeps_its_schedule_in(tmp_path):
    data = tmp_path / "fresh" / "data"
    env = {**_env(tmp_path, data), "PKIQ_BROKER_URL": REDIS_URL}
    output = _run_until([sys.executable, "-m", "celery", "-A", "worker", "beat"], env,
                        tmp_path / "beat.log", lambda: any(data.glob("celerybeat-schedule*")))
    assert any(data.glob("celerybeat-schedule*")), output
    assert data.stat().st_mode & 0o777 == 0o700


def test_celery_beat_on_the_embedded_broker_sends_into_folders_it_made(tmp_path):
    """Beat alone on a fresh data dir: its first reconcile message must land in the queue
    folder, which no worker has made yet."""
    data = tmp_path / "fresh" / "data"
    env = {**_env(tmp_path, data), "PKIQ_RECONCILE_SECONDS": "1"}
    messages = data / "queue" / "messages"
    output = _run_until([sys.executable, "-m", "celery", "-A", "worker", "beat"], env,
                        tmp_path / "beat.log",
                        lambda: messages.is_dir() and any(messages.iterdir()))
    assert messages.is_dir() and any(messages.iterdir()), output
    assert "SchedulingError" not in output


def test_celery_worker_on_the_embedded_broker_makes_its_queue_folders(tmp_path):
    data = tmp_path / "fresh" / "data"
    log = tmp_path / "worker.log"
    output = _run_until([sys.executable, "-m", "celery", "-A", "worker", "worker", "-c", "1",
                         "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                         "--without-heartbeat"],
                        _env(tmp_path, data), log, lambda: "ready" in log.read_text())
    assert "ready" in output, output
    for sub in ("messages", "processed", "control"):
        assert (data / "queue" / sub).is_dir()
