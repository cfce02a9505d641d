"""What a new user meets first: the CLI reads the same passphrase file as the workers, the
service refuses to start when it can unlock no CA (every job would fail), names the CAs it
cannot unlock, and a command run beside make run's ./pkiq-data without PKIQ_DATA_DIR says it
is using another database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import PASSPHRASE


def _env(tmp_path, **extra) -> dict:
    env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data"), **extra}
    for name in ("PKIQ_DATABASE_URL", "PKIQ_CA_PASSPHRASE", "PKIQ_BROKER_URL"):
        if name not in extra:
            env.pop(name, None)
    return env


def _pkiq(env, *args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "pkiq", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _passfile(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_every_command_reads_pkiq_ca_passphrase_file(tmp_path):
    good = _passfile(tmp_path, "ca.pass", PASSPHRASE)
    env = _env(tmp_path, PKIQ_CA_PASSPHRASE_FILE=str(good))
    created = _pkiq(env, "ca", "create", "Root", "--subject", "/CN=Root", "--key-type",
                    "ec-p256")
    assert created.returncode == 0, created.stderr
    assert _pkiq(env, "ca", "gencrl", "Root", "--json").returncode == 0
    for broken, said in ((_passfile(tmp_path, "empty.pass", ""), "is empty"),
                         (tmp_path / "missing.pass", "cannot read PKIQ_CA_PASSPHRASE_FILE")):
        done = _pkiq(_env(tmp_path, PKIQ_CA_PASSPHRASE_FILE=str(broken)), "ca", "gencrl", "Root")
        assert done.returncode == 6
        assert done.stderr.count("\n") == 1 and said in done.stderr
    wrong = _passfile(tmp_path, "wrong.pass", "not it")
    done = _pkiq(_env(tmp_path, PKIQ_CA_PASSPHRASE_FILE=str(wrong)), "ca", "gencrl", "Root")
    assert done.returncode == 6 and PASSPHRASE not in done.stderr + done.stdout
    # an option still wins over the variable
    assert _pkiq(_env(tmp_path, PKIQ_CA_PASSPHRASE_FILE=str(wrong)), "ca", "gencrl", "Root",
                 "--passphrase-file", good).returncode == 0


def _start(env, *args, log):
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "pkiq", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _until_ready(proc, log) -> str:
    """The process's output once Celery says it is ready (or it exited, or a minute passed)."""
    deadline = time.monotonic() + 60
    while "ready" not in log.read_text() and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.2)
    return log.read_text()


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_the_service_refuses_to_start_when_it_can_unlock_no_ca(tmp_path):
    good = _passfile(tmp_path, "ca.pass", PASSPHRASE)
    env = _env(tmp_path, PKIQ_CA_PASSPHRASE_FILE=str(good))
    assert _pkiq(env, "ca", "create", "Root", "--subject", "/CN=Root", "--key-type",
                 "ec-p256").returncode == 0
    for command in ("serve", "worker"):
        for env_now in (_env(tmp_path, PKIQ_CA_PASSPHRASE_FILE=str(tmp_path / "nope.pass")),
                        _env(tmp_path, PKIQ_CA_PASSPHRASE="wrong"), _env(tmp_path)):
            done = _pkiq(env_now, command, timeout=60)
            assert done.returncode == 6, done.stderr
            lines = done.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("pkiq: error: no CA can be unlocked")
            assert "Root" in lines[0] and "PKIQ_CA_PASSPHRASE_FILE" in lines[0]


def test_the_service_names_the_cas_it_cannot_unlock_and_starts(tmp_path):
    good = _passfile(tmp_path, "ca.pass", PASSPHRASE)
    other = _passfile(tmp_path, "other.pass", "another passphrase")
    env = _env(tmp_path, PKIQ_CA_PASSPHRASE_FILE=str(good))
    assert _pkiq(env, "ca", "create", "Root", "--subject", "/CN=Root", "--key-type",
                 "ec-p256").returncode == 0
    assert _pkiq(env, "ca", "create", "Other", "--subject", "/CN=Other", "--key-type",
                 "ec-p256", "--passphrase-file", other).returncode == 0
    log = tmp_path / "worker.log"
    proc = _start(env, "worker", "-c", "1", log=log)
    try:
        text = _until_ready(proc, log)
        assert "ready" in text, text
        assert "pkiq: warning: cannot unlock CA Other, its jobs will fail" in text
        assert "cannot unlock CA Root" not in text
    finally:
        _stop(proc)


def test_a_fresh_service_with_no_ca_starts_and_says_what_is_missing(tmp_path):
    port = _free_port()
    env = _env(tmp_path, PKIQ_CA_PASSPHRASE_FILE=str(tmp_path / "not-made-yet.pass"),
               PKIQ_WEB_PORT=str(port))
    log = tmp_path / "serve.log"
    proc = _start(env, "serve", "-c", "1", log=log)
    try:
        text = _until_ready(proc, log)
        assert "ready" in text, text
        assert "no CA yet" in text and "cannot read PKIQ_CA_PASSPHRASE_FILE" in text
        # serve runs the web app beside the workers and beat
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert answer.status == 200 and answer.read() == b"ok"
    finally:
        _stop(proc)
    with pytest.raises(OSError):  # and stops it with them
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_command_beside_pkiq_data_says_it_uses_another_database(tmp_path):
    project = tmp_path / "project"
    (project / "pkiq-data").mkdir(parents=True)
    env = _env(project, PKIQ_CA_PASSPHRASE="x", XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop("PKIQ_DATA_DIR")
    make_demo = {**env, "PKIQ_DATA_DIR": str(project / "pkiq-data")}
    assert _pkiq(make_demo, "ca", "list", cwd=project).returncode == 0
    done = _pkiq(env, "ca", "list", cwd=project)
    assert done.returncode == 0
    assert "./pkiq-data holds the one make run/demo use" in done.stderr
    assert str(tmp_path / "xdg" / "pkiq") in done.stderr
    again = _pkiq(env, "ca", "list", cwd=project)  # said once: that database exists now
    assert again.stderr == ""
    assert _pkiq(make_demo, "ca", "list", cwd=project).stderr == ""


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path):
    for name, value, said in (("PKIQ_JOB_TIMEOUT_SECONDS", "abc", "valid integer"),
                              ("PKIQ_JOB_TIMEOUT_SECONDS", "3", "greater than or equal to 10"),
                              ("PKIQ_SMTP_STARTTLS", "maybe", "valid boolean")):
        done = _pkiq(_env(tmp_path, **{name: value, "PKIQ_CA_PASSPHRASE": "sekrit-value"}),
                     "ca", "list")
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"pkiq: error: bad setting: {name}=")
        assert said in lines[0] and "sekrit-value" not in done.stderr
