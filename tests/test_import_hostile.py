"""``pkiq ca import-openssl DIR`` with a hostile demoCA: it reads only regular files inside
DIR, bounded, never echoes what a file holds, attaches only certificates the CA signed, and
refuses serials and subjects pkiq could not carry on with.

Every refusal is one line, exit 3, no CA afterwards, and no secret in the output. The folders
are made by the openssl binary (CA, leaf) and by hand (symlinks, FIFOs, sparse files)."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.confined import Folder
from ca.errors import BadInput
from ca.serials import MAX_SERIAL_BITS

from .conftest import FakeClock, make_csr, openssl
from .test_cli import assert_one_line_error

pytestmark = pytest.mark.openssl

SECRET = "TOPSECRET-" + secrets.token_hex(8)
CA_SUBJECT = "/C=GB/O=Example/CN=Hostile Test CA"
PATH_KEYS = {
    "certificate": "$dir/cacert.pem",
    "private_key": "$dir/private/cakey.pem",
    "database": "$dir/index.txt",
    "serial": "$dir/serial",
    "crlnumber": "$dir/crlnumber",
    "new_certs_dir": "$dir/newcerts",
}


@pytest.fixture
def clock() -> FakeClock:
    """The wall clock, which the openssl binary stamped the test CAs with."""
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


def config_text(**keys: str) -> str:
    """An openssl.cnf with a [ CA_default ] section; ``keys`` replace the path entries or
    come before them (NCONF expands a variable where it is used: define it first)."""
    entries = {k: v for k, v in keys.items() if k not in PATH_KEYS}
    entries.update({k: keys.get(k, v) for k, v in PATH_KEYS.items()})
    entries.update(policy="policy_anything", unique_subject="no")
    lines = ["dir = /somewhere/else", "", "[ ca ]", "default_ca = CA_default", "",
             "[ CA_default ]", *[f"{k} = {v}" for k, v in entries.items()], "",
             "[ policy_anything ]", "commonName = supplied", ""]
    return "\n".join(lines)


def make_ca(folder: Path, subject: str = CA_SUBJECT) -> None:
    (folder / "private").mkdir(parents=True)
    (folder / "newcerts").mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "3650", "-subj", subject,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(folder / "private" / "cakey.pem"), "-out", str(folder / "cacert.pem"))


def sign_leaf(ca: Path, serial: int, out: Path, cn: str = "leaf.example.com") -> None:
    """A leaf signed by the CA in ``ca`` with the openssl binary, as ``openssl ca`` would."""
    key, csr = out.with_suffix(".key"), out.with_suffix(".csr")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca / "cacert.pem"),
            "-CAkey", str(ca / "private" / "cakey.pem"), "-set_serial", f"0x{serial:X}",
            "-days", "365", "-out", str(out))
    key.unlink()
    csr.unlink()


def index_row(serial: str, subject: str, status: str = "V") -> str:
    return f"{status}\t361231000000Z\t\t{serial}\tunknown\t{subject}\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """``demoCA`` (serial 10 issued, in newcerts/) beside ``other``, another CA with the
    same name and its own serial 10, and two files that must stay unread."""
    work = tmp_path_factory.mktemp("hostile")
    demo, other = work / "demoCA", work / "other"
    for folder in (demo, other):
        make_ca(folder)
        sign_leaf(folder, 0x10, folder / "newcerts" / "10.pem")
        (folder / "index.txt").write_text(index_row("10", "/CN=leaf.example.com"))
        (folder / "serial").write_text("11\n")
        (folder / "crlnumber").write_text("01\n")
    (demo / "openssl.cnf").write_text(config_text())
    (work / "token.txt").write_text("0BADC0DE\n")  # hex-looking: it must not become a serial
    (work / "secret.txt").write_text(f"{SECRET}\n")
    return work


@dataclass
class Folders:
    work: Path
    demo: Path
    other: Path

    def config(self, **keys: str) -> None:
        (self.demo / "openssl.cnf").write_text(config_text(**keys))

    def replace(self, relative: str, target: str | Path) -> Path:
        """Make ``demo/relative`` a symlink to ``target``, whatever it was before."""
        path = self.demo / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.symlink_to(target)
        return path


@pytest.fixture
def folders(template, tmp_path) -> Folders:
    work = tmp_path / "work"
    shutil.copytree(template, work, symlinks=True)
    return Folders(work, work / "demoCA", work / "other")


@contextmanager
def deadline(seconds: int):
    """Fail, rather than hang the suite, if the import blocks (a FIFO opened for reading)."""
    def expired(*_):
        raise TimeoutError(f"import-openssl still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def cas(pkiq) -> list[str]:
    return [c["name"] for c in json.loads(pkiq("ca", "list", "--json").output)]


def refused(pkiq, folders: Folders, fragment: str, *args, code: int = 3) -> str:
    """Import, expect one error line with ``fragment``, no CA, and nothing secret shown."""
    with deadline(60):
        result = pkiq("ca", "import-openssl", "Evil", folders.demo, *args)
    assert_one_line_error(result, code, fragment)
    shown = result.output + result.stderr
    assert SECRET not in shown and "0BADC0DE" not in shown.upper()
    other_key = (folders.other / "private" / "cakey.pem").read_text().splitlines()
    assert not any(line in shown for line in other_key if "-----" not in line)
    assert len(result.stderr) < 600, result.stderr
    assert cas(pkiq) == []
    return result.stderr


def imported(pkiq, folders: Folders, *args) -> str:
    with deadline(60):
        result = pkiq("ca", "import-openssl", "Evil", folders.demo, *args)
    assert result.exit_code == 0, (result.output, result.stderr)
    assert cas(pkiq) == ["Evil"]
    return result.stderr


def test_the_untouched_template_imports(pkiq, folders):
    """The yardstick: without tampering the folder imports and serves serial 10."""
    assert "warning" not in imported(pkiq, folders)
    got = pkiq("cert", "get", "10", "--ca", "Evil")
    assert got.exit_code == 0
    assert got.output == (folders.demo / "newcerts" / "10.pem").read_text()
    info = json.loads(pkiq("ca", "show", "Evil", "--json").output)
    assert info["next_serial"] == "11"


# ---------------------------------------------------------------- paths that leave DIR

@pytest.mark.parametrize("key, value", [
    ("serial", "{work}/token.txt"),                       # absolute, hex-looking
    ("serial", "$dir/../token.txt"),
    ("serial", "$dir/newcerts/../../token.txt"),
    ("crlnumber", "$dir/../token.txt"),
    ("private_key", "$dir/../other/private/cakey.pem"),   # another CA's key
    ("private_key", "{work}/other/private/cakey.pem"),
    ("certificate", "/etc/passwd"),
    ("certificate", "$dir/../other/cacert.pem"),
    ("database", "../other/index.txt"),                   # relative: to DIR, not the cwd
    ("database", "/dev/zero"),
    ("new_certs_dir", "$dir/../other/newcerts"),
    ("new_certs_dir", "/"),
    ("serial", "$up/token.txt"),                          # through another variable
])
def test_config_paths_outside_dir_are_refused(pkiq, folders, key, value):
    """Absolute paths, '..' and '$dir/..' out of DIR: refused naming the key and the path,
    whether or not the file there exists or parses."""
    folders.config(**{key: value.format(work=folders.work)}, up="$dir/..")
    stderr = refused(pkiq, folders, f"{key} = ")
    assert "outside" in stderr


@pytest.mark.parametrize("value, fragment", [
    ("$dir/ser\x00ial", "serial"),
    ("$dir/" + "x" * 5000, "serial"),
    ("$dir/" + "/".join(["d"] * 3000), "serial"),
])
def test_unusable_config_paths_are_one_line(pkiq, folders, value, fragment):
    folders.config(serial=value)
    refused(pkiq, folders, fragment)


@pytest.mark.parametrize("relative, target", [
    ("serial", "../token.txt"),                                  # a file symlink out
    ("crlnumber", "{work}/token.txt"),                           # absolute
    ("private/cakey.pem", "../../other/private/cakey.pem"),
    ("cacert.pem", "/etc/passwd"),
    ("index.txt", "../secret.txt"),
    ("index.txt.attr", "../secret.txt"),
    ("private", "../other/private"),                              # a directory symlink out
    ("newcerts", "{work}/other/newcerts"),
    ("newcerts/10.pem", "../../other/newcerts/10.pem"),
    ("serial", "/dev/zero"),
    ("serial", "../no-such-file"),                                # dangling, outside
    ("openssl.cnf", "../secret.txt"),                             # the default config
])
def test_symlinks_leaving_dir_are_refused(pkiq, folders, relative, target):
    folders.replace(relative, target.format(work=folders.work))
    assert "outside" in refused(pkiq, folders, "outside")


def test_a_symlink_loop_is_refused(pkiq, folders):
    folders.replace("serial", "serial2")
    folders.replace("serial2", "serial")
    refused(pkiq, folders, "serial")


def test_symlinks_that_stay_inside_dir_are_followed(pkiq, folders):
    store = folders.demo / "store"
    store.mkdir()
    shutil.move(folders.demo / "cacert.pem", store / "cacert.pem")
    shutil.move(folders.demo / "newcerts", store / "newcerts")
    folders.replace("cacert.pem", "store/cacert.pem")
    folders.replace("newcerts", str(store / "newcerts"))  # absolute, yet inside
    folders.config(serial=f"{folders.demo}/sub/../serial")
    (folders.demo / "sub").mkdir()
    imported(pkiq, folders)
    assert pkiq("cert", "get", "10", "--ca", "Evil").exit_code == 0


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(folders):
    """The race a path check alone loses: ``private`` becomes a symlink out between
    resolving the path and opening it. The walk down with O_NOFOLLOW refuses it."""
    folder = Folder(folders.demo)
    real = folder.locate("private/cakey.pem", "private/cakey.pem")
    assert folder.read(real, "key", 4096).startswith(b"-----BEGIN")
    shutil.rmtree(folders.demo / "private")
    (folders.demo / "private").symlink_to(folders.other / "private")
    with pytest.raises(BadInput, match="symlink"):
        folder.read(real, "private/cakey.pem", 4096)


def test_include_and_a_redirected_dir_are_not_followed(pkiq, folders):
    """``.include`` is never read, and ``dir`` is DIR whatever the config sets it to."""
    (folders.work / "evil.cnf").write_text("[ CA_default ]\nserial = $dir/../token.txt\n")
    text = config_text(dir="/etc", certificate="$dir/passwd")
    (folders.demo / "openssl.cnf").write_text(
        f".include {folders.work}/evil.cnf\n.include {folders.work}/secret.txt\n{text}")
    stderr = imported(pkiq, folders)
    assert "ignored 2 directive" in stderr and SECRET not in stderr
    info = json.loads(pkiq("ca", "show", "Evil", "--json").output)
    assert info["next_serial"] == "11" and "Hostile Test CA" in info["subject"]


def test_an_explicit_config_may_live_outside_but_its_paths_may_not(pkiq, folders):
    """--config is the operator's choice of file; what it names still stays in DIR."""
    outside = folders.work / "elsewhere.cnf"
    (folders.demo / "openssl.cnf").rename(outside)
    imported(pkiq, folders, "--config", outside)
    outside.write_text(config_text(serial="$dir/../token.txt"))
    result = pkiq("ca", "import-openssl", "Evil2", folders.demo, "--config", outside)
    assert_one_line_error(result, 3, "serial = ")
    assert cas(pkiq) == ["Evil"]


# ---------------------------------------------------------------- what is read, and how much

@pytest.mark.parametrize("relative", ["serial", "crlnumber", "index.txt", "cacert.pem",
                                      "private/cakey.pem", "index.txt.attr", "openssl.cnf",
                                      "newcerts/10.pem"])
def test_a_fifo_is_refused_without_hanging(pkiq, folders, relative):
    path = folders.demo / relative
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    refused(pkiq, folders, "not a regular file")


@pytest.mark.parametrize("relative", ["serial", "cacert.pem", "index.txt", "newcerts/10.pem"])
def test_a_directory_where_a_file_belongs_is_refused(pkiq, folders, relative):
    path = folders.demo / relative
    path.unlink()
    path.mkdir()
    refused(pkiq, folders, "not a regular file")


def test_new_certs_dir_that_is_a_file_is_refused(pkiq, folders):
    shutil.rmtree(folders.demo / "newcerts")
    (folders.demo / "newcerts").write_text("not a folder\n")
    refused(pkiq, folders, "newcerts")


@pytest.mark.parametrize("relative, size", [
    ("index.txt", 513 * 2**20),
    ("cacert.pem", 2 * 2**20),
    ("private/cakey.pem", 2 * 2**20),
    ("openssl.cnf", 2 * 2**20),
    ("index.txt.attr", 2 * 2**20),
    ("newcerts/10.pem", 2 * 2**20),
    ("serial", 5000),
    ("crlnumber", 5000),
])
def test_oversize_files_are_refused_unread(pkiq, folders, relative, size):
    """Sparse files: refused from their size, in well under a second, memory untouched."""
    path = folders.demo / relative
    with path.open("ab") as handle:
        handle.truncate(size)
    started = time.monotonic()
    refused(pkiq, folders, "larger than")
    assert time.monotonic() - started < 10


def doubling(depth: int, ref: str = "${{v{}}}") -> dict[str, str]:
    keys = {"v0": "x" * 64}
    for level in range(1, depth + 1):
        keys[f"v{level}"] = ref.format(level - 1) * 2
    return keys


@pytest.mark.parametrize("extra", [
    doubling(40),                                    # 64 * 2^40 characters if expanded
    doubling(40, "$v{}"),
    doubling(12, "$CA_default::v{}"),                # 256 KiB: over the 64 KiB cap
    {"v0": "y" * 60_000, **{f"w{i}": "$v0" for i in range(400)}},  # wide: 24 MB in all
], ids=["braces", "plain", "section", "wide"])
def test_variable_expansion_is_capped_as_openssl_caps_it(pkiq, folders, extra):
    folders.config(**extra)
    started = time.monotonic()
    stderr = refused(pkiq, folders, "openssl.cnf")
    assert "65536" in stderr or "expanded" in stderr
    assert time.monotonic() - started < 10


def test_a_value_just_under_openssls_limit_is_read(pkiq, folders):
    """65,535 characters expanded: what ``openssl ca`` still reads (65,536 it refuses)."""
    folders.config(v0="x" * 65534, v1="y${v0}")
    imported(pkiq, folders)


def test_a_value_continued_over_many_lines_is_capped_too(pkiq, folders):
    folders.config(long="a\\\n" * 300_000 + "a")  # one value, 300,001 lines
    started = time.monotonic()
    refused(pkiq, folders, "65536")
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------- content never echoed

@pytest.mark.parametrize("relative, content, fragment", [
    ("serial", f"{SECRET}\n", "serial"),
    ("crlnumber", f"{SECRET}\n", "crlnumber"),
    ("serial", f"{'A' * 10}{SECRET}\n", "serial"),
    ("index.txt", f"{SECRET}\n", "index.txt line 1"),
    ("index.txt", f"V\t{SECRET}\t\t10\tunknown\t/CN=x\n", "index.txt line 1"),
    ("index.txt", f"R\t361231000000Z\t{SECRET}\t10\tunknown\t/CN=x\n", "index.txt line 1"),
    ("index.txt", f"R\t361231000000Z\t261101000000Z,{SECRET}\t10\tunknown\t/CN=x\n",
     "index.txt line 1"),
    ("index.txt", f"V\t361231000000Z\t\t{SECRET}\tunknown\t/CN=x\n", "index.txt line 1"),
    ("index.txt.attr", f"{SECRET}\n", "index.txt.attr"),
    ("index.txt.attr", f"[{SECRET}\n", "index.txt.attr"),
    ("openssl.cnf", config_text(default_days=SECRET), "default_days"),
    ("openssl.cnf", config_text(serial=f"$dir/{SECRET}/$nope"), "openssl.cnf"),
    ("openssl.cnf", f"{SECRET}\n", "openssl.cnf line 1"),
    ("cacert.pem", f"{SECRET}\n", "cacert.pem"),
    ("private/cakey.pem", f"{SECRET}\n", "cakey.pem"),
], ids=["serial", "crlnumber", "serial-hexish", "index-line", "index-expiry",
        "index-revoked-at", "index-reason", "index-serial", "attr-line", "attr-header",
        "config-number", "config-variable", "config-line", "cacert", "cakey"])
def test_file_content_is_never_echoed(pkiq, folders, relative, content, fragment):
    (folders.demo / relative).write_text(content)
    refused(pkiq, folders, fragment)


def test_a_secret_given_as_the_config_is_not_echoed(pkiq, folders):
    """--config pointing at a file of secrets by mistake: one line, none of its content."""
    secrets_file = folders.work / "secrets.env"
    secrets_file.write_text(f"API_TOKEN={SECRET}\nroot:{SECRET}:19000:0:99999:7:::\n")
    refused(pkiq, folders, "line 2", "--config", secrets_file)


# ---------------------------------------------------------------- newcerts/ bodies

def imposter_self_signed(path: Path) -> None:
    """Right serial, right subject, right issuer name -- signed by its own key."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", CA_SUBJECT, "-set_serial", "0x10", "-days", "30",
            "-keyout", str(path.with_suffix(".key")), "-out", str(path))
    path.with_suffix(".key").unlink()


@pytest.mark.parametrize("make", [
    imposter_self_signed,
    # The other CA has the same name: its serial 10 names our CA as issuer.
    lambda path: shutil.copy(path.parents[2] / "other" / "newcerts" / "10.pem", path),
    # Genuinely ours, but serial 11 in the file named 10.
    lambda path: sign_leaf(path.parents[1], 0x11, path, cn="leaf.example.com"),
], ids=["self-signed", "other-ca", "wrong-serial"])
def test_a_newcerts_imposter_is_not_attached(pkiq, folders, make):
    make(folders.demo / "newcerts" / "10.pem")
    stderr = imported(pkiq, folders)
    assert "10.pem" in stderr and "warning" in stderr
    got = pkiq("cert", "get", "10", "--ca", "Evil")
    assert got.exit_code == 5, got.output
    assert pkiq("ca", "status", "Evil", "10").output.strip() == "10=Valid (V)"


# ---------------------------------------------------------------- index subjects and serials

@pytest.mark.parametrize("subject", [
    "/CN=a\x01b.example.com",
    "/CN=\x1b[31mred.example.com",
    "/CN=del\x7f.example.com",
    "/O=Example/CN=x\x00y.example.com",
    "/CN=line\u2028sep.example.com",
    "/CN=next\x85line.example.com",
    "/CN=cr\rin.example.com",
    "/CN=a\\x0Ab.example.com",          # openssl's own escape of a line feed
    "/CN=a\\x1Bb.example.com",
    "/CN=a\u202eb.example.com",           # a bidirectional override
    "/O=\\xE2\\x80\\xAEevil/CN=ok.example.com",  # the same, as openssl escapes it
    "/OU=zero\u200bwidth/CN=ok.example.com",
], ids=repr)
@pytest.mark.parametrize("serial", ["10", "20"], ids=["with-body", "index-only"])
def test_control_characters_in_index_subjects_are_refused(pkiq, folders, subject, serial):
    (folders.demo / "index.txt").write_text(index_row(serial, subject), newline="")
    refused(pkiq, folders, "index.txt line 1")


def test_an_index_subject_with_a_utf8_escape_imports(pkiq, folders):
    """openssl writes non-ASCII as \\xHH: caf\\xC3\\xA9 is a plain e-acute, not a refusal."""
    (folders.demo / "index.txt").write_text(index_row("20", "/O=caf\\xC3\\xA9/CN=ok.example"))
    imported(pkiq, folders)


TOP = 1 << MAX_SERIAL_BITS


@pytest.mark.parametrize("relative, content", [
    ("serial", f"{TOP:X}\n"),
    ("serial", f"{TOP << 1:X}\n"),
    ("serial", "0\n"),
    ("index.txt", index_row(f"{TOP:X}", "/CN=top.example.com")),
    ("index.txt", index_row(f"{TOP - 1:X}", "/CN=last.example.com")),  # next would be 2^159
    ("index.txt", index_row("F" * 100_000, "/CN=huge.example.com")),
    ("index.txt", index_row("00", "/CN=zero.example.com")),
])
def test_serials_that_would_leave_rfc5280_bounds_are_refused(pkiq, folders, relative, content):
    (folders.demo / relative).write_text(content)
    refused(pkiq, folders, "20 octets")


def test_the_last_serial_rfc5280_allows_is_still_usable(pkiq, folders):
    (folders.demo / "serial").write_text(f"{TOP - 1:X}\n")
    imported(pkiq, folders)
    info = json.loads(pkiq("ca", "show", "Evil", "--json").output)
    assert int(info["next_serial"], 16) == TOP - 1
    first, second = folders.demo / "a.pem", folders.demo / "b.pem"
    first.write_bytes(make_csr("a.example.com"))
    second.write_bytes(make_csr("b.example.com"))
    signed = pkiq("ca", "sign", "Evil", first, "--json")
    assert signed.exit_code == 0, signed.stderr
    assert int(json.loads(signed.output)["serial"], 16) == TOP - 1
    assert_one_line_error(pkiq("ca", "sign", "Evil", second), 4, "used up its sequential")


# ---------------------------------------------------------------- the CA's own validity

def write_ca(folder: Path, not_before: dt.datetime, not_after: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dated CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "cacert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "private" / "cakey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (folder / "index.txt").write_text("")
    shutil.rmtree(folder / "newcerts")
    (folder / "newcerts").mkdir()


def test_an_expired_ca_is_imported_with_a_warning(pkiq, folders, clock, tmp_path):
    """Its index and certificates are records worth keeping; pkiq signs nothing with it."""
    write_ca(folders.demo, clock() - dt.timedelta(days=400), clock() - dt.timedelta(days=1))
    stderr = imported(pkiq, folders)
    assert "pkiq: warning:" in stderr and "expired on" in stderr
    csr = tmp_path / "req.pem"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=late.example.com", "-keyout", str(tmp_path / "req.key"),
            "-out", str(csr))
    assert pkiq("ca", "sign", "Evil", csr).exit_code == 4


def test_a_ca_not_yet_valid_is_imported_with_a_warning(pkiq, folders, clock):
    write_ca(folders.demo, clock() + dt.timedelta(days=10), clock() + dt.timedelta(days=400))
    stderr = imported(pkiq, folders)
    assert "pkiq: warning:" in stderr and "not valid before" in stderr
