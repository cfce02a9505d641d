"""Files are bounded and never clobber; configuration errors are usage errors (issue 9,
items 5 and 8).

Inputs: every command that reads a file reads only a regular file, at most 64 MiB, and
refuses anything else in one line: /dev/zero (which grew a signer to 23.6 GB), a FIFO (which
hung it), a socket, a device node, through symlinks too. Those cases run as real processes
under a memory limit and a timeout, so that a regression fails instead of eating the host.

Outputs: ``--out`` replaces only a regular file (a device node made here stands in for
/dev/full), and a write that cannot happen changes nothing in the database: no serial, no
certificate row, no CRL number.

Settings: a ``PKIQ_*`` value pkiq cannot use is exit 2 (6 for a passphrase), one line naming
the variable and what it accepts, never a secret's value, never a traceback.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from ca.errors import BadInput
from ca.models import Certificate, CertificateAuthority, Crl
from ca.x509text import MAX_FILE_BYTES
from pkiq.cli import cli
from pkiq.cli_common import PARTIAL, Output, OutputNotWritten
from shell.files import read_regular, write_atomic

from .conftest import PASSPHRASE, make_csr
from .test_cli import assert_one_line_error

ZERO, FULL = os.makedev(1, 5), os.makedev(1, 7)  # the numbers of /dev/zero and /dev/full


# ---------------------------------------------------------------- helpers

@pytest.fixture
def short_dir():
    """A folder with a short path: a Unix socket's path must fit in 108 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="pkiq-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def make_socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays
    return path


def not_regular(folder: Path, short: Path) -> dict[str, Path]:
    """Everything that is not a regular file, each as a path a user could give (the socket
    in ``short``)."""
    folder.mkdir(exist_ok=True)
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    os.mknod(folder / "zero", 0o644 | stat.S_IFCHR, ZERO)
    (folder / "dev-zero").symlink_to("/dev/zero")
    (folder / "to-fifo").symlink_to(fifo)
    (folder / "chain").symlink_to(folder / "to-fifo")
    return {"fifo": fifo, "device": folder / "zero", "link to /dev/zero": folder / "dev-zero",
            "link to a FIFO": folder / "to-fifo", "link to a link to a FIFO": folder / "chain",
            "socket": make_socket(short / f"sock{len(list(short.iterdir()))}")}


def oversized(folder: Path) -> Path:
    """A sparse regular file one byte over the cap (no disk used)."""
    path = folder / "huge.pem"
    with open(path, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    return path


def limit_memory():
    """Run in the child before exec: 2 GiB of address space is plenty for pkiq, and far
    below what reading /dev/zero would take."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def env_for(db_url: str, data_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKIQ_")}
    env.update(PKIQ_DATABASE_URL=db_url, PKIQ_DATA_DIR=str(data_dir), **extra)
    return env


def run(env, *args, timeout=60) -> subprocess.CompletedProcess:
    """The real ``pkiq`` entry point (main() maps the errors), bounded in memory and time."""
    return subprocess.run([sys.executable, "-m", "pkiq", *map(str, args)], env=env,
                          capture_output=True, timeout=timeout, preexec_fn=limit_memory)


def assert_one_line(done: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == code, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pkiq: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in stderr + done.stdout.decode(errors="replace")
    return lines[0]


def state(app, name: str = "R") -> tuple:
    """What a failed command must not change: certificate rows, the next sequential
    serial, the CRL number and the CRLs issued."""
    with app.transaction() as session:
        ca = session.scalars(select(CertificateAuthority).filter_by(name=name)).one()
        certificates = session.scalar(select(func.count(Certificate.id)).filter_by(ca_id=ca.id))
        crls = session.scalar(select(func.count(Crl.id)).filter_by(ca_id=ca.id))
        return certificates, ca.next_serial, ca.crl_number, crls


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".pkiq-*")]


@pytest.fixture
def ca_r(pkiq):
    """A CA with sequential serials, so a consumed serial shows in next_serial."""
    done = pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256",
                "--serial-mode", "sequential")
    assert done.exit_code == 0, done.output
    return "R"


# ---------------------------------------------------------------- inputs

def test_ca_sign_reads_only_regular_files(pkiq, ca_r, db_url, tmp_path, short_dir):
    """/dev/zero (directly, by symlink, as a device node made here), FIFOs (directly and
    through one or two symlinks), a socket, a file over the cap: each refused at once in one
    line, in a real process that would otherwise hang or run out of memory."""
    env = env_for(db_url, tmp_path / "data", PKIQ_CA_PASSPHRASE=PASSPHRASE)
    before = state(pkiq.app)
    hostile = {**not_regular(tmp_path / "in", short_dir), "/dev/zero": Path("/dev/zero")}
    for kind, path in hostile.items():
        said = "a FIFO" if "FIFO" in kind or kind == "fifo" else (
            "a socket" if kind == "socket" else "a character device")
        assert_one_line(run(env, "ca", "sign", ca_r, path), 3, str(path), said,
                        "not a regular file")
    assert_one_line(run(env, "ca", "sign", ca_r, oversized(tmp_path)), 3,
                    f"at most {MAX_FILE_BYTES}")
    assert state(pkiq.app) == before
    good = tmp_path / "ok.pem"
    good.write_bytes(make_csr())
    link = tmp_path / "ok-link.pem"
    link.symlink_to(good)  # a symlink to a regular file is read as the file
    assert run(env, "ca", "sign", ca_r, link).returncode == 0


def test_every_reader_refuses_what_is_not_a_regular_file(pkiq, ca_r, db_url, tmp_path, short_dir):
    """trust add, crl upload, x509 decode and x509 convert share the reader: a FIFO, a link
    to /dev/zero, a socket and an oversized file each get one line and exit 3."""
    env = env_for(db_url, tmp_path / "data")
    inputs = not_regular(tmp_path / "in", short_dir)
    cases = [inputs["fifo"], inputs["link to /dev/zero"], inputs["socket"], oversized(tmp_path)]
    for command in (("trust", "add"), ("crl", "upload"), ("x509", "decode")):
        for path in cases:
            assert_one_line(run(env, *command, path), 3, str(path))
    for path in cases[:2]:
        assert_one_line(run(env, "x509", "convert", path, tmp_path / "out.pem"), 3, str(path))
    assert not (tmp_path / "out.pem").exists()
    listed = run(env, "trust", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["entries"] == []


def test_submit_a_folder_with_devices_fifos_and_sockets(pkiq, ca_r, db_url, tmp_path, short_dir):
    """A folder of requests holding a link to /dev/zero, FIFOs, a socket and an oversized
    file beside a good request: the good one is queued, each other is a refused file with
    its reason, exit 9, and nothing hangs."""
    folder = tmp_path / "in"
    inputs = not_regular(folder, short_dir)
    (folder / "good.pem").write_bytes(make_csr())
    oversized(folder)
    env = env_for(db_url, tmp_path / "data")
    done = run(env, "submit", "--ca", ca_r, "--json", *sorted(folder.iterdir()),
               inputs["socket"])
    assert done.returncode == PARTIAL, done.stderr
    rows = {r["file"]: r for r in json.loads(done.stdout)}
    assert rows[str(folder / "good.pem")]["state"] == "queued"
    assert sum(1 for r in rows.values() if r["id"] is not None) == 1
    for path in [*inputs.values(), folder / "huge.pem"]:
        row = rows[str(path)]
        assert row["id"] is None and row["error"], row
        assert "not a regular file" in row["error"] or "at most" in row["error"], row
    assert "Traceback" not in done.stderr.decode()


def test_submit_refuses_a_folder_or_a_missing_file_alone(pkiq, ca_r, tmp_path):
    """A folder or a vanished file among the arguments is one refused file, not a usage error
    that drops the whole batch."""
    good = tmp_path / "good.pem"
    good.write_bytes(make_csr())
    (tmp_path / "sub").mkdir()
    done = pkiq("submit", "--ca", ca_r, "--json", good, tmp_path / "sub", tmp_path / "gone.pem")
    assert done.exit_code == PARTIAL, done.output
    rows = {r["file"]: r for r in json.loads(done.output)}
    assert rows[str(good)]["state"] == "queued"
    assert "a directory" in rows[str(tmp_path / "sub")]["error"]
    assert "No such file" in rows[str(tmp_path / "gone.pem")]["error"]


def test_passphrase_files_that_cannot_be_one(pkiq, ca_r, db_url, tmp_path, short_dir):
    """As --passphrase-file and as PKIQ_CA_PASSPHRASE_FILE: missing, a folder, empty, a FIFO,
    a device, links to /dev/zero and to a FIFO, a socket. Exit 6, one line naming it."""
    folder = tmp_path / "pass"
    hostile = not_regular(folder, short_dir)
    (folder / "empty").write_bytes(b"")
    (folder / "dir").mkdir()
    hostile.update(missing=folder / "missing", empty=folder / "empty", folder=folder / "dir")
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    before = state(pkiq.app)
    for path in hostile.values():
        by_option = run(env_for(db_url, tmp_path / "data"), "ca", "sign", ca_r, csr,
                        "--passphrase-file", path)
        assert_one_line(by_option, 6, str(path))
        by_setting = run(env_for(db_url, tmp_path / "data", PKIQ_CA_PASSPHRASE_FILE=str(path),
                                 PKIQ_CA_PASSPHRASE=PASSPHRASE), "ca", "gencrl", ca_r)
        assert_one_line(by_setting, 6, "PKIQ_CA_PASSPHRASE_FILE", str(path))
    assert state(pkiq.app) == before


def test_the_bounded_reader(tmp_path):
    """read_regular itself: exactly the limit is read, one byte more is refused, a file that
    says 0 bytes (as /proc files do) is still read whole, ``head`` cuts instead."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_regular(path, limit=100) == b"x" * 100
    with pytest.raises(BadInput, match="at most 99"):
        read_regular(path, limit=99)
    assert read_regular(path, limit=10, head=True) == b"x" * 10
    assert read_regular(Path("/proc/self/status"), limit=1 << 20).startswith(b"Name:")
    with pytest.raises(BadInput, match="a directory, not a regular file"):
        read_regular(tmp_path, limit=10)


# ---------------------------------------------------------------- outputs

def output_targets(folder: Path, short: Path) -> dict[str, tuple[Path, int, str]]:
    """Output paths that cannot be written or must not be replaced: (path, exit code, what
    the line says)."""
    folder.mkdir()
    (folder / "plain").write_text("a regular file, not a folder\n")
    (folder / "real.pem").write_text("kept\n")
    (folder / "link.pem").symlink_to(folder / "real.pem")
    (folder / "dangling.pem").symlink_to(folder / "nowhere.pem")
    os.mkfifo(folder / "fifo")
    os.mknod(folder / "full", 0o644 | stat.S_IFCHR, FULL)
    (folder / "dir").mkdir()
    return {
        "name too long": (folder / ("n" * 300 + ".pem"), 3, "too long"),
        "missing folder": (folder / "missing" / "c.pem", 3, "does not exist"),
        "parent is a file": (folder / "plain" / "c.pem", 3, "plain"),
        "under /proc": (Path("/proc/self/pkiq-out.pem"), 3, "pkiq-out.pem"),
        "device node": (folder / "full", 3, "a character device"),
        "FIFO": (folder / "fifo", 3, "a FIFO"),
        "socket": (make_socket(short / "sock"), 3, "a socket"),
        "symlink": (folder / "link.pem", 3, "a symbolic link"),
        "dangling symlink": (folder / "dangling.pem", 3, "a symbolic link"),
        "folder": (folder / "dir", 2, "directory"),
    }


def kinds(folder: Path) -> dict[str, int]:
    return {p.name: os.lstat(p).st_mode for p in folder.iterdir()}


@pytest.mark.parametrize("command", [("ca", "sign", "R", "{csr}"), ("ca", "gencrl", "R"),
                                     ("ca", "sign", "R", "{csr}", "--json", "--der"),
                                     ("ca", "gencrl", "R", "--json")])
def test_a_failed_output_write_changes_nothing(pkiq, ca_r, tmp_path, short_dir, command):
    """sign and gencrl with --out where no file can go: the serial is not consumed, no row
    is stored, the CRL number does not move, the target is as it was, no temporary file is
    left behind. Then the same commands with a good --out work."""
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    args = [a.format(csr=csr) for a in command]
    targets = output_targets(tmp_path / "out", short_dir)
    before, files = state(pkiq.app), kinds(tmp_path / "out")
    for kind, (target, code, said) in targets.items():
        result = pkiq(*args, "--out", target)
        if code == 2:  # click's own check on --out: a usage error
            assert result.exit_code == 2 and said in result.output, (kind, result.output)
        else:
            assert_one_line_error(result, code, said)
        assert state(pkiq.app) == before, kind
    assert kinds(tmp_path / "out") == files
    assert (tmp_path / "out" / "real.pem").read_text() == "kept\n"
    assert stat.S_ISCHR(os.lstat(tmp_path / "out" / "full").st_mode)
    assert leftovers(tmp_path) == [] and leftovers(short_dir) == []
    good = tmp_path / "out" / "good"
    assert pkiq(*args, "--out", good).exit_code == 0
    assert state(pkiq.app) != before and good.stat().st_size > 0
    assert pkiq(*args, "--out", good).exit_code == 0  # a regular file is replaced


def test_other_outputs_replace_only_regular_files(pkiq, ca_r, tmp_path, short_dir):
    """cert get, ca crl, x509 convert and export-openssl refuse the same targets."""
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    signed = pkiq("ca", "sign", "R", csr, "--json", "--out", tmp_path / "c.pem")
    serial = json.loads(signed.output)["serial"]
    assert pkiq("ca", "gencrl", "R").exit_code == 0
    targets = output_targets(tmp_path / "out", short_dir)
    files = kinds(tmp_path / "out")
    for kind in ("device node", "FIFO", "socket", "symlink", "name too long", "under /proc"):
        target, code, said = targets[kind]
        for args in (("cert", "get", serial, "--ca", "R"), ("ca", "crl", "R")):
            assert_one_line_error(pkiq(*args, "--out", target), code, said)
        assert_one_line_error(pkiq("x509", "convert", csr, target), code, said)
    assert kinds(tmp_path / "out") == files and leftovers(tmp_path) == []
    for kind in ("FIFO", "device node", "symlink", "socket"):
        target = targets[kind][0]
        export = pkiq("ca", "export-openssl", "R", target, "--handover")
        assert export.exit_code in (2, 7), (kind, export.output)
        assert json.loads(pkiq("ca", "show", "R", "--json").output)["handed_over_at"] is None
    (tmp_path / "real-dir").mkdir()
    (tmp_path / "dir-link").symlink_to(tmp_path / "real-dir")
    assert_one_line_error(pkiq("ca", "export-openssl", "R", tmp_path / "dir-link",
                               "--handover"), 7, "a symbolic link")
    assert json.loads(pkiq("ca", "show", "R", "--json").output)["handed_over_at"] is None


def test_a_rename_failing_after_the_commit_names_what_was_issued(tmp_path):
    """The one failure left after the database commits: the target turns into something
    else between staging and the rename. The line says what was issued and how to get it,
    exit 9 (partly done), and the staged file is gone."""
    target = tmp_path / "c.pem"
    with Output(target) as output:
        output.stage(b"-----BEGIN CERTIFICATE-----\n")
        os.mkfifo(target)
        with pytest.raises(OutputNotWritten) as caught:
            output.commit("certificate serial 0A of CA R", "pkiq cert get 0A --ca R --out x")
    assert caught.value.exit_code == PARTIAL
    message = str(caught.value)
    assert "certificate serial 0A of CA R was issued and recorded" in message
    assert "a FIFO" in message and "pkiq cert get 0A" in message
    assert stat.S_ISFIFO(os.lstat(target).st_mode) and leftovers(tmp_path) == []


def test_write_atomic_keeps_a_file_whole_and_private(tmp_path):
    path = tmp_path / "k.pem"
    write_atomic(path, b"secret", mode=0o600)
    assert path.read_bytes() == b"secret" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(BadInput, match="does not exist"):  # no folders made on the way
        write_atomic(tmp_path / "typo" / "k.pem", b"x")
    assert not (tmp_path / "typo").exists()


# ---------------------------------------------------------------- settings

def settings_env(tmp_path, **extra) -> dict:
    """For CliRunner: every PKIQ_* of the test's environment unset, then ``extra``."""
    env: dict = {k: None for k in os.environ if k.startswith("PKIQ_")}
    env.update({"PKIQ_DATA_DIR": str(tmp_path / "data"), **extra})
    return env


def invoke(tmp_path, *args, **extra):
    """pkiq in-process with settings read from the environment, as a real command does."""
    return CliRunner().invoke(cli, list(map(str, args)), env=settings_env(tmp_path, **extra),
                              catch_exceptions=False)


BAD_NUMBERS = [
    ("PKIQ_JOB_TIMEOUT_SECONDS", "abc"), ("PKIQ_JOB_TIMEOUT_SECONDS", "3"),
    ("PKIQ_JOB_TIMEOUT_SECONDS", "99999999999999999999"), ("PKIQ_JOB_TIMEOUT_SECONDS", "-5"),
    ("PKIQ_JOB_TIMEOUT_SECONDS", "1.5"), ("PKIQ_RECONCILE_SECONDS", "0"),
    ("PKIQ_RECONCILE_SECONDS", "86401"), ("PKIQ_CRL_TICK_SECONDS", "4"),
    ("PKIQ_CRL_TICK_SECONDS", "1e400"), ("PKIQ_SMTP_PORT", "0"), ("PKIQ_SMTP_PORT", "70000"),
    ("PKIQ_SMTP_PORT", "smtp"), ("PKIQ_WEBHOOK_TIMEOUT", "nan"),
    ("PKIQ_WEBHOOK_TIMEOUT", "inf"), ("PKIQ_WEBHOOK_TIMEOUT", "-1"),
    ("PKIQ_WEBHOOK_TIMEOUT", "0"), ("PKIQ_SMTP_TIMEOUT", "301"),
    ("PKIQ_SMTP_STARTTLS", "maybe"), ("PKIQ_SMTP_SSL", "2"),
]


@pytest.mark.parametrize("name,value", BAD_NUMBERS)
def test_a_setting_out_of_range_is_a_usage_error(tmp_path, name, value):
    result = invoke(tmp_path, "ca", "list", **{name: value, "PKIQ_CA_PASSPHRASE": "sekrit-val"})
    assert_one_line_error(result, 2, f"bad setting: {name}=")
    assert "accepted: " in result.stderr and "sekrit-val" not in result.output


BAD_DATABASES = ["mysql://u:pw@db/pkiq", "mariadb://u@db/pkiq", "oracle://u@db/pkiq",
                 "mssql+pyodbc://u@dsn", "postgres://u@db/pkiq", "postgresql+psycopg2://u@db/x",
                 "garbage", "sqlite", "http://example.com/db"]


@pytest.mark.parametrize("url", BAD_DATABASES)
def test_an_unsupported_database_url_is_a_usage_error(tmp_path, url):
    result = invoke(tmp_path, "ca", "list", PKIQ_DATABASE_URL=url)
    assert_one_line_error(result, 2, "PKIQ_DATABASE_URL")
    assert "postgresql://" in result.stderr and "sqlite:///" in result.stderr


def test_a_sqlite_file_that_cannot_be_is_a_usage_error(tmp_path, short_dir):
    """The SQLite file in a folder that is a file, under /proc, at a FIFO, a device, a
    folder, a socket; and PKIQ_DATA_DIR a file. The variable the path came from is named."""
    (tmp_path / "plain").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    os.mknod(tmp_path / "zero", 0o644 | stat.S_IFCHR, ZERO)
    make_socket(short_dir / "sock")
    for path, said in ((tmp_path / "plain" / "pkiq.db", "is not a folder"),
                       (Path("/proc/self/none/pkiq.db"), "cannot make"),
                       (tmp_path / "fifo", "a FIFO"), (tmp_path / "zero", "a character device"),
                       (tmp_path, "a directory"), (short_dir / "sock", "a socket")):
        result = invoke(tmp_path, "ca", "list", PKIQ_DATABASE_URL=f"sqlite:///{path}")
        assert_one_line_error(result, 2, said)
        assert "PKIQ_DATABASE_URL" in result.stderr
    result = invoke(tmp_path, "ca", "list", PKIQ_DATA_DIR=str(tmp_path / "plain"))
    assert_one_line_error(result, 2, "PKIQ_DATA_DIR")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


@pytest.mark.parametrize("url", ["garbage", "mysql://x/0", "amqp://guest@mq//", "sqs://"])
def test_an_unsupported_broker_url_is_a_usage_error(tmp_path, url):
    result = invoke(tmp_path, "ca", "list", PKIQ_BROKER_URL=url)
    assert_one_line_error(result, 2, "PKIQ_BROKER_URL")
    assert "redis://" in result.stderr


def test_an_empty_variable_counts_as_unset(tmp_path):
    """As compose files write them (``VAR: ${VAR:-}``)."""
    result = invoke(tmp_path, "ca", "list", PKIQ_JOB_TIMEOUT_SECONDS="", PKIQ_DATABASE_URL="",
                    PKIQ_BROKER_URL="", PKIQ_CA_PASSPHRASE_FILE="", PKIQ_SMTP_PORT="")
    assert result.exit_code == 0, result.output


NOT_UTF8 = [b"\xff\xfe", b"caf\xe9", b"\xc3\x28", b"\xed\xa0\x80", b"ok\x80ok"]


def test_settings_in_real_processes(tmp_path):
    """Through ``python -m pkiq`` (main() maps the errors): a bad number, an unsupported
    database, non-UTF-8 bytes in text settings (os.environb), each exit 2 in one line."""
    base = {k: v for k, v in os.environb.items() if not k.startswith(b"PKIQ_")}
    base[b"PKIQ_DATA_DIR"] = os.fsencode(tmp_path / "data")
    cases = [(b"PKIQ_JOB_TIMEOUT_SECONDS", b"abc", "accepted: whole seconds from 10"),
             (b"PKIQ_DATABASE_URL", b"mysql://u@db/pkiq", "mysql:// is not supported"),
             (b"PKIQ_DATABASE_URL", b"sqlite:////tmp/\xff.db", "not valid UTF-8"),
             (b"PKIQ_SMTP_HOST", b"mail\xff.example", "not valid UTF-8"),
             (b"PKIQ_QUEUE", b"q\xe9", "not valid UTF-8"),
             (b"PKIQ_DATA_DIR", os.fsencode(tmp_path) + b"/\xff", "PKIQ_DATA_DIR")]
    for name, value, said in cases:
        done = run({**base, name: value}, "ca", "list")
        assert_one_line(done, 2, said)


def test_a_non_utf8_passphrase_variable_is_a_passphrase_error(pkiq, ca_r, db_url, tmp_path):
    """PKIQ_CA_PASSPHRASE and a --passphrase-env variable holding bytes that are not UTF-8:
    exit 6, the variable named, the bytes never shown; nothing signed."""
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    before = state(pkiq.app)
    base = {k: v for k, v in os.environb.items() if not k.startswith(b"PKIQ_")}
    base.update({b"PKIQ_DATABASE_URL": db_url.encode(),
                 b"PKIQ_DATA_DIR": os.fsencode(tmp_path / "data")})
    for secret in NOT_UTF8:
        done = run({**base, b"PKIQ_CA_PASSPHRASE": secret}, "ca", "sign", ca_r, csr)
        line = assert_one_line(done, 6, "PKIQ_CA_PASSPHRASE is not valid UTF-8")
        assert os.fsdecode(secret) not in line and repr(secret)[2:-1] not in line
    done = run({**base, b"MY_PASS": NOT_UTF8[0]}, "ca", "gencrl", ca_r,
               "--passphrase-env", "MY_PASS")
    assert_one_line(done, 6, "MY_PASS is not valid UTF-8")
    assert state(pkiq.app) == before


def test_the_alert_timeout_bound_is_the_alerts_own():
    """Settings refuses what the alert channels would refuse later, and no more."""
    from scheduler.alerts import MAX_TIMEOUT
    from shell.settings import MAX_ALERT_TIMEOUT

    assert MAX_ALERT_TIMEOUT == MAX_TIMEOUT
