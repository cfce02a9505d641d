"""The CA key at rest resists guessing: PBKDF2-HMAC-SHA256 at 600,000 iterations in a
standard PKCS#8 that openssl reads, passphrases of at least 12 characters when one is chosen,
``pkiq ca passwd``, and keys of an older pkiq (or another tool) re-encrypted when next
unlocked with the right passphrase by a command that succeeds."""

from __future__ import annotations

import ast
import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_modules import rfc5280, rfc5958, rfc7914, rfc8018
from sqlalchemy import update

from ca import authority, jobs, pkcs8
from ca.errors import BadInput
from ca.models import CertificateAuthority
from service import cas
from shell.db import transaction

from .conftest import PASSPHRASE, make_csr, openssl
from .test_cli import assert_one_line_error
from .test_hostile_input import make_democa

ROOT = Path(__file__).resolve().parent.parent
NEW = "a new, longer passphrase"
DEFAULT_ITERATIONS = 600_000  # what OWASP's Password Storage Cheat Sheet asks of PBKDF2-SHA256


# ---------------------------------------------------------------- helpers

def stored_key(app, name="Root") -> str:
    with app.transaction() as session:
        return authority.get_ca(session, name).key_pem


def store_key(app, pem: str, name="Root") -> None:
    """Put a key in the row as an older pkiq (or another tool) would have stored it."""
    with app.transaction() as session:
        session.execute(update(CertificateAuthority).where(CertificateAuthority.name == name)
                        .values(key_pem=pem))


def create(pkiq, name="Root", *extra):
    result = pkiq("ca", "create", name, "--subject", f"/CN={name}", "--key-type", "ec-p256",
                  *extra)
    assert result.exit_code == 0, result.output
    return result


def unlocks(pem: str, passphrase: str) -> bool:
    try:
        serialization.load_pem_private_key(pem.encode(), passphrase.encode())
    except ValueError:
        return False
    return True


def openssl_view(pem: str, tmp_path: Path) -> dict:
    """The KDF, PRF, cipher and iteration count as ``openssl asn1parse`` reads them: a
    parser that is not pkiq's."""
    path = tmp_path / "view.pem"
    path.write_text(pem)
    text = openssl("asn1parse", "-in", str(path)).stdout.decode()
    objects = [line.rsplit(":", 1)[1].strip() for line in text.splitlines()
               if "prim: OBJECT" in line]
    integers = [int(line.rsplit(":", 1)[1], 16) for line in text.splitlines()
                if "prim: INTEGER" in line]
    return {"objects": objects, "iterations": integers[0] if integers else None}


def reencrypt_with_openssl(pem: str, passphrase: str, tmp_path: Path, *args: str) -> str:
    """The same key, encrypted by the openssl binary the way ``args`` say."""
    passfile = tmp_path / "legacy.pass"
    passfile.write_text(passphrase + "\n")
    src, clear, out = (tmp_path / n for n in ("src.pem", "clear.pem", "legacy.pem"))
    src.write_text(pem)
    openssl("pkey", "-in", str(src), "-passin", f"file:{passfile}", "-out", str(clear))
    if args[0] == "-traditional":
        openssl("pkey", "-in", str(clear), "-traditional", "-aes256", "-passout",
                f"file:{passfile}", "-out", str(out))
    else:
        openssl("pkcs8", "-topk8", "-in", str(clear), "-passout", f"file:{passfile}",
                "-out", str(out), *args)
    clear.unlink()
    return out.read_text()


def hand_made_key(kdf_oid, kdf_params) -> str:
    """An EncryptedPrivateKeyInfo whose KDF asks for whatever a hostile file says; the
    encrypted bytes are noise, since pkiq must refuse it before deriving anything."""
    def algorithm(oid, params):
        alg = rfc5280.AlgorithmIdentifier()
        alg["algorithm"] = oid
        alg["parameters"] = encoder.encode(params)
        return alg

    pbes2 = rfc8018.PBES2_params()
    pbes2["keyDerivationFunc"] = algorithm(kdf_oid, kdf_params)
    pbes2["encryptionScheme"] = algorithm(rfc8018.aes256_CBC_PAD, univ.OctetString(b"i" * 16))
    info = rfc5958.EncryptedPrivateKeyInfo()
    info["encryptionAlgorithm"] = algorithm(rfc8018.id_PBES2, pbes2)
    info["encryptedData"] = os.urandom(64)
    body = base64.encodebytes(encoder.encode(info)).decode()
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}-----END ENCRYPTED PRIVATE KEY-----\n"


@pytest.fixture
def real_work_factor(monkeypatch):
    """pkiq's own work factor, for the tests that check it in-process (conftest lowers it)."""
    monkeypatch.setattr(pkcs8, "PBKDF2_ITERATIONS", DEFAULT_ITERATIONS)


# ---------------------------------------------------------------- the stored key

def test_a_real_pkiq_process_stores_pbkdf2_sha256_600000_aes256_that_openssl_reads(tmp_path):
    """A `pkiq ca create` process of its own (no test setting reaches it) stores the real
    default; openssl reads the key with the passphrase and refuses a wrong one."""
    env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data"), "PKIQ_CA_PASSPHRASE":
           PASSPHRASE}
    env.pop("PKIQ_DATABASE_URL", None)
    env.pop("PKIQ_CA_PASSPHRASE_FILE", None)
    done = subprocess.run([sys.executable, "-m", "pkiq", "ca", "create", "Root", "--subject",
                           "/CN=Root", "--key-type", "ec-p256", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["key_protection"] == "PBKDF2-HMAC-SHA256, 600,000 iterations, AES-256-CBC"
    assert info["key_protection_current"] is True
    export = tmp_path / "export"
    done = subprocess.run([sys.executable, "-m", "pkiq", "ca", "export-openssl", "Root",
                           str(export)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pem = (export / "private" / "cakey.pem").read_text()
    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    view = openssl_view(pem, tmp_path)
    assert view["objects"] == ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"]
    assert view["iterations"] == DEFAULT_ITERATIONS
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    key = export / "private" / "cakey.pem"
    assert openssl("pkey", "-in", str(key), "-passin", f"file:{passfile}", "-noout",
                   check=False).returncode == 0
    passfile.write_text("correct horse battery stapler\n")
    assert openssl("pkey", "-in", str(key), "-passin", f"file:{passfile}", "-noout",
                   check=False).returncode != 0


def test_nothing_outside_the_tests_assigns_the_work_factor():
    """The lowered work factor of tests/conftest.py can reach production only by code that
    assigns it: none does, apart from its one definition."""
    found = []
    for package in ("ca", "shell", "service", "scheduler", "worker", "pkiq", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                targets = []
                if isinstance(node, ast.Assign):
                    targets = node.targets
                elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                    targets = [node.target]
                for target in targets:
                    name = getattr(target, "attr", None) or getattr(target, "id", None)
                    if name == "PBKDF2_ITERATIONS":
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if isinstance(node, ast.Call) and any(
                        isinstance(a, ast.Constant) and a.value == "PBKDF2_ITERATIONS"
                        for a in node.args):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} (by name)")
    assert len(found) == 1 and found[0].startswith("ca/pkcs8.py:"), found


def test_new_imported_and_changed_keys_use_todays_work_factor(pkiq, app, tmp_path,
                                                              real_work_factor):
    create(pkiq)
    create(pkiq, "Sub", "--parent", "Root")
    assert pkiq("ca", "import-openssl", "Imported",
                make_democa(tmp_path / "demo")).exit_code == 0
    newfile = tmp_path / "new.pass"
    newfile.write_text(NEW + "\n")
    assert pkiq("ca", "passwd", "Sub", "--new-passphrase-file", newfile).exit_code == 0
    for name in ("Root", "Sub", "Imported"):
        view = openssl_view(stored_key(app, name), tmp_path)
        assert view == {"objects": ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"],
                        "iterations": DEFAULT_ITERATIONS}, name
    shown = json.loads(pkiq("ca", "show", "Imported", "--json").output)
    assert shown["key_protection"] == "PBKDF2-HMAC-SHA256, 600,000 iterations, AES-256-CBC"


# ---------------------------------------------------------------- choosing a passphrase

SHORT = ["", "x", "1234", "elevenchars", "ééééééééééé", " " * 11]


@pytest.mark.parametrize("short", SHORT)
def test_a_short_passphrase_is_refused_wherever_one_is_chosen(pkiq, app, tmp_path, short):
    """ca create (root and subordinate), import-openssl and ca passwd: exit 6, one line,
    nothing stored. Eleven characters is one too few, in characters, not bytes."""
    env = {"SHORT_PASS": short}
    refused = pkiq("ca", "create", "Short", "--subject", "/CN=Short", "--key-type", "ec-p256",
                   "--passphrase-env", "SHORT_PASS", env=env)
    if short == "":  # an empty variable is "not set": the missing-passphrase line, still 6
        assert_one_line_error(refused, 6, "SHORT_PASS")
    else:
        assert_one_line_error(refused, 6, "shorter than 12 characters")
    create(pkiq)
    before = stored_key(app)
    for args in (("ca", "create", "Sub", "--subject", "/CN=Sub", "--key-type", "ec-p256",
                  "--parent", "Root", "--passphrase-env", "SHORT_PASS"),
                 ("ca", "passwd", "Root", "--new-passphrase-env", "SHORT_PASS")):
        result = pkiq(*args, env=env)
        assert result.exit_code == 6, (args, result.output)
        assert "Traceback" not in result.output
    imported = pkiq("ca", "import-openssl", "Imp", make_democa(tmp_path / "demo"),
                    "--passphrase-env", "SHORT_PASS", env=env)
    assert imported.exit_code == 6, imported.output
    assert [c["name"] for c in json.loads(pkiq("ca", "list", "--json").output)] == ["Root"]
    assert stored_key(app) == before


def test_twelve_characters_are_enough_and_counted_as_characters(pkiq, app):
    for name, passphrase in (("Ascii", "twelve chars"), ("Accents", "éééééééééééé")):
        result = pkiq("ca", "create", name, "--subject", f"/CN={name}", "--key-type",
                      "ec-p256", "--passphrase-env", "P", env={"P": passphrase})
        assert result.exit_code == 0, result.output
        assert unlocks(stored_key(app, name), passphrase)


# ---------------------------------------------------------------- ca passwd

def test_passwd_changes_the_passphrase_and_keeps_the_key(pkiq, app, tmp_path):
    create(pkiq)
    before = json.loads(pkiq("ca", "show", "Root", "--json").output)
    old_key = serialization.load_pem_private_key(stored_key(app).encode(), PASSPHRASE.encode())
    newfile = tmp_path / "new.pass"
    newfile.write_text(NEW + "\n")
    done = pkiq("ca", "passwd", "Root", "--new-passphrase-file", newfile)
    assert done.exit_code == 0, done.output
    assert "Running workers keep the key they hold" in done.output
    pem = stored_key(app)
    assert not unlocks(pem, PASSPHRASE)
    new_key = serialization.load_pem_private_key(pem.encode(), NEW.encode())
    assert new_key.private_numbers() == old_key.private_numbers()
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    assert_one_line_error(pkiq("ca", "sign", "Root", csr), 6, "wrong passphrase")
    signed = pkiq("ca", "sign", "Root", csr, "--passphrase-file", newfile)
    assert signed.exit_code == 0, signed.output
    assert json.loads(pkiq("ca", "show", "Root", "--json").output) == before
    # and back again, with the new one given by variable
    assert pkiq("ca", "passwd", "Root", "--passphrase-file", newfile, "--new-passphrase-env",
                "BACK", env={"BACK": PASSPHRASE}).exit_code == 0
    assert unlocks(stored_key(app), PASSPHRASE)


def test_passwd_refusals_change_nothing(pkiq, app, tmp_path):
    create(pkiq)
    before = stored_key(app)
    newfile = tmp_path / "new.pass"
    newfile.write_text(NEW + "\n")
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the passphrase at all\n")
    short = tmp_path / "short.pass"
    short.write_text("short\n")
    empty = tmp_path / "empty.pass"
    empty.write_text("\n")
    cases = [
        (("--passphrase-file", wrong, "--new-passphrase-file", newfile), 6, "wrong passphrase"),
        (("--new-passphrase-file", short), 6, "shorter than 12 characters"),
        (("--passphrase-file", wrong, "--new-passphrase-file", short), 6, "shorter than 12"),
        ((), 6, "give the new passphrase with --new-passphrase-file"),
        (("--new-passphrase-file", empty), 6, "is empty"),
        (("--new-passphrase-file", tmp_path / "missing.pass"), 6, "cannot read"),
        (("--new-passphrase-env", "UNSET_PKIQ_TEST_VAR"), 6, "UNSET_PKIQ_TEST_VAR"),
    ]
    for args, code, fragment in cases:
        assert_one_line_error(pkiq("ca", "passwd", "Root", *args), code, fragment)
        assert stored_key(app) == before, args
    assert_one_line_error(pkiq("ca", "passwd", "Nope", "--new-passphrase-file", newfile), 5,
                          "no CA named 'Nope'")
    assert stored_key(app) == before


def test_passwd_on_a_handed_over_ca_protects_pkiqs_copy_and_says_openssls_is_unchanged(
        pkiq, app, tmp_path):
    create(pkiq)
    export = tmp_path / "export"
    assert pkiq("ca", "export-openssl", "Root", export, "--handover").exit_code == 0
    newfile = tmp_path / "new.pass"
    newfile.write_text(NEW + "\n")
    done = pkiq("ca", "passwd", "Root", "--new-passphrase-file", newfile)
    assert done.exit_code == 0, done.output
    assert f"handed over to openssl ca in {export.resolve()}" in done.stderr
    assert "keeps the old passphrase" in done.stderr
    assert unlocks(stored_key(app), NEW)
    assert unlocks((export / "private" / "cakey.pem").read_text(), PASSPHRASE)


def test_a_running_worker_keeps_signing_after_passwd_and_a_restarted_one_needs_the_new(
        app, tmp_path, clock, monkeypatch):
    """The worker's signer is cached by CA and public key, not by the stored PEM: a key
    re-encrypted at rest is the same key."""
    from shell.settings import Settings
    from worker import tasks
    from worker.celery_app import make_app

    cas.create_ca(app, name="Root", subject="/CN=Root", key_type="ec-p256", days=365,
                  passphrase=PASSPHRASE.encode())
    make_app(Settings(data_dir=tmp_path / "data", ca_passphrase=PASSPHRASE))
    monkeypatch.setattr(tasks, "_state", {"pid": os.getpid(), "factory": app.sessions,
                                          "signers": {}})

    def job(cn):
        with transaction(app.sessions) as session:
            ca = authority.get_ca(session, "Root")
            return jobs.submit_many(session, ca, [make_csr(f"{cn}.example.com")],
                                    profile="webserver", requester="t", now=clock())[0].job.id

    def state(job_id):
        with transaction(app.sessions) as session:
            found = jobs.get_job(session, job_id)
            return found.state, found.error

    first = job("a")
    tasks.sign_jobs([first])
    assert state(first) == ("issued", None)
    cas.change_passphrase(app, "Root", passphrase=PASSPHRASE.encode(),
                          new_passphrase=NEW.encode())
    second = job("b")
    tasks.sign_jobs([second])
    assert state(second) == ("issued", None)
    tasks._state["signers"].clear()  # the worker restarts, still given the old passphrase
    third = job("c")
    tasks.sign_jobs([third])
    assert state(third)[0] == "failed" and "wrong passphrase" in state(third)[1]


# ---------------------------------------------------------------- upgrade on unlock

LEGACY = {
    "pkiq before (cryptography, 2,048 iterations)": None,
    "PBKDF2-SHA1, 1,000 iterations, AES-128": ("-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1",
                                               "-iter", "1000"),
    "PBES1 SHA1 3DES": ("-v1", "PBE-SHA1-3DES"),
    "scrypt N=2^14": ("-scrypt", "-scrypt_N", "16384", "-scrypt_r", "8", "-scrypt_p", "1"),
    "OpenSSL traditional PEM": ("-traditional",),
    "one iteration short": ("-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256", "-iter",
                            "{short}"),
}


def legacy_key(app, tmp_path, how) -> str:
    pem = stored_key(app)
    if how is None:
        key = serialization.load_pem_private_key(pem.encode(), PASSPHRASE.encode())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.BestAvailableEncryption(PASSPHRASE.encode())
                                 ).decode()
    args = tuple(a.format(short=pkcs8.PBKDF2_ITERATIONS - 1) for a in how)
    return reencrypt_with_openssl(pem, PASSPHRASE, tmp_path, *args)


@pytest.mark.parametrize("how", list(LEGACY.values()), ids=list(LEGACY))
def test_an_older_key_is_re_encrypted_when_a_command_unlocks_it(pkiq, app, tmp_path, how):
    create(pkiq)
    old = legacy_key(app, tmp_path, how)
    assert not pkcs8.protection(old).is_current()
    store_key(app, old)
    shown = json.loads(pkiq("ca", "show", "Root", "--json").output)
    assert shown["key_protection_current"] is False
    assert "re-encrypted when next unlocked" in pkiq("ca", "show", "Root").output
    done = pkiq("ca", "gencrl", "Root")
    assert done.exit_code == 0, done.output
    assert "pkiq: warning: the key of CA 'Root' was stored with" in done.stderr
    pem = stored_key(app)
    assert pkcs8.protection(pem) == pkcs8.current()
    assert unlocks(pem, PASSPHRASE)
    assert json.loads(pkiq("ca", "show", "Root", "--json").output)["key_protection_current"]
    again = pkiq("ca", "gencrl", "Root")  # once is enough
    assert again.exit_code == 0 and "re-encrypted" not in again.stderr
    assert stored_key(app) == pem


def test_every_unlocking_command_upgrades_and_a_current_key_is_left_alone(pkiq, app, tmp_path):
    create(pkiq)
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    commands = [("ca", "sign", "Root", csr), ("ca", "gencrl", "Root"),
                ("ca", "create", "Sub", "--subject", "/CN=Sub", "--key-type", "ec-p256",
                 "--parent", "Root")]
    for command in commands:
        store_key(app, legacy_key(app, tmp_path, None))
        done = pkiq(*command)
        assert done.exit_code == 0, (command, done.output)
        assert "re-encrypted with PBKDF2-HMAC-SHA256" in done.stderr, command
        assert pkcs8.protection(stored_key(app)).is_current(), command
    # the worker's start check (pkiq worker / serve) upgrades too
    store_key(app, legacy_key(app, tmp_path, None))
    report = cas.unlock_check(app)
    assert report["unlocked"] == ["Root", "Sub"]
    assert report["notes"] == [
        "the key of CA 'Root' was stored with PBKDF2-HMAC-SHA256, 2,048 iterations, "
        f"AES-256-CBC; re-encrypted with {pkcs8.current()}"]
    assert pkcs8.protection(stored_key(app)).is_current()
    current = stored_key(app)
    assert cas.unlock_check(app)["notes"] == []
    assert stored_key(app) == current


def test_a_failed_command_or_a_wrong_passphrase_upgrades_nothing(pkiq, app, tmp_path):
    assert pkiq("ca", "create", "Root", "--subject", "/O=Other Ltd/CN=Root", "--key-type",
                "ec-p256", "--policy", "organizationName=match,commonName=supplied"
                ).exit_code == 0
    old = legacy_key(app, tmp_path, None)
    store_key(app, old)
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())  # O=Example: not the CA's organisation
    refused = pkiq("ca", "sign", "Root", csr)
    assert refused.exit_code == 4, refused.output
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                        b"-----END CERTIFICATE REQUEST-----\n")
    assert pkiq("ca", "sign", "Root", garbage).exit_code == 3
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the passphrase at all\n")
    assert pkiq("ca", "gencrl", "Root", "--passphrase-file", wrong).exit_code == 6
    assert stored_key(app) == old


def test_a_ca_with_a_short_passphrase_still_unlocks_and_is_told_how_to_change_it(
        pkiq, app, tmp_path):
    """The length rule is for passphrases chosen from now on: an older CA's short one keeps
    working (and its key is upgraded under it), with a warning that names ca passwd."""
    create(pkiq)
    key = serialization.load_pem_private_key(stored_key(app).encode(), PASSPHRASE.encode())
    store_key(app, key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.BestAvailableEncryption(b"1234")).decode())
    short = tmp_path / "short.pass"
    short.write_text("1234\n")
    done = pkiq("ca", "gencrl", "Root", "--passphrase-file", short)
    assert done.exit_code == 0, done.output
    assert "re-encrypted" in done.stderr
    assert ("the passphrase of CA 'Root' is shorter than 12 characters, the rule for new "
            "ones: change it with pkiq ca passwd Root") in done.stderr
    assert "1234" not in done.stderr + done.stdout
    assert unlocks(stored_key(app), "1234")
    newfile = tmp_path / "new.pass"
    newfile.write_text(NEW + "\n")
    assert pkiq("ca", "passwd", "Root", "--passphrase-file", short, "--new-passphrase-file",
                newfile).exit_code == 0
    done = pkiq("ca", "gencrl", "Root", "--passphrase-file", newfile)
    assert done.exit_code == 0 and done.stderr == ""


def test_two_processes_upgrading_at_once_store_one_valid_key(app, pkiq, tmp_path):
    """Each unlock stores only over the key it read: both commands succeed, one stores, and
    the key is a valid current encryption under the same passphrase."""
    create(pkiq)
    store_key(app, legacy_key(app, tmp_path, None))
    start = threading.Barrier(2)
    notes: list = [None, None]

    def unlock(index):
        with transaction(app.sessions) as session:
            ca = authority.get_ca(session, "Root")
            # On PostgreSQL both read the old key before either stores. SQLite's writer
            # lock (BEGIN IMMEDIATE) serialises the transactions: the second reads the first's.
            if session.bind.dialect.name == "postgresql":
                start.wait(timeout=30)
            notes[index] = authority.unlock(session, ca, PASSPHRASE.encode())[1]

    threads = [threading.Thread(target=unlock, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(isinstance(n, list) for n in notes), notes
    assert sum(bool(n) for n in notes) == 1, notes
    pem = stored_key(app)
    assert pkcs8.protection(pem).is_current() and unlocks(pem, PASSPHRASE)


def test_an_upgrade_never_undoes_a_passwd_that_committed_meanwhile(app, pkiq, tmp_path):
    create(pkiq)
    store_key(app, legacy_key(app, tmp_path, None))
    with transaction(app.sessions) as session:
        stale = authority.get_ca(session, "Root")  # read by a command under the old passphrase
    cas.change_passphrase(app, "Root", passphrase=PASSPHRASE.encode(),
                          new_passphrase=NEW.encode())
    with transaction(app.sessions) as session:
        session.add(stale)
        signer, notes = authority.unlock(session, stale, PASSPHRASE.encode())
    assert signer.public_key() is not None and notes == []
    pem = stored_key(app)
    assert unlocks(pem, NEW) and not unlocks(pem, PASSPHRASE)


# ---------------------------------------------------------------- hostile KDF parameters

def test_a_key_asking_for_absurd_work_is_refused_before_any_is_done(pkiq, app, tmp_path):
    """An imported cakey.pem (or a tampered row) with 2**31-1 PBKDF2 iterations or scrypt
    asking for 16 GiB would hold the command for days or exhaust memory: refused at once,
    exit 3, one line, nothing stored."""
    def pbkdf2(iterations):
        params = rfc8018.PBKDF2_params()
        params["salt"]["specified"] = b"s" * 16
        params["iterationCount"] = iterations
        return hand_made_key(rfc8018.id_PBKDF2, params)

    def scrypt(n, r, p):
        params = rfc7914.Scrypt_params()
        params["salt"] = b"s" * 16
        params["costParameter"] = n
        params["blockSize"] = r
        params["parallelizationParameter"] = p
        return hand_made_key(rfc7914.id_scrypt, params)

    folder = make_democa(tmp_path / "demo")
    hostile = [(pbkdf2(2**31 - 1), "2,147,483,647 PBKDF2 iterations"),
               (pbkdf2(pkcs8.MAX_PBKDF2_ITERATIONS + 1), "PBKDF2 iterations"),
               (scrypt(2**20, 128, 1), "MiB of memory"),
               (scrypt(2**14, 8, 2**20), "MiB of memory")]
    for pem, fragment in hostile:
        (folder / "private" / "cakey.pem").write_text(pem)
        began = time.monotonic()
        assert_one_line_error(pkiq("ca", "import-openssl", "Hostile", folder), 3, fragment)
        assert time.monotonic() - began < 10
    assert json.loads(pkiq("ca", "list", "--json").output) == []
    create(pkiq, "Tampered")
    store_key(app, pbkdf2(2**31 - 1), "Tampered")
    began = time.monotonic()
    with pytest.raises(BadInput, match="PBKDF2 iterations"), app.transaction() as session:
        authority.unlock(session, authority.get_ca(session, "Tampered"), PASSPHRASE.encode())
    assert time.monotonic() - began < 10


def test_protection_is_read_from_any_pem_without_the_passphrase():
    """What ca show reports, for each kind of key a CA row or an import may hold; nothing
    unreadable raises."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    clear = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    assert pkcs8.protection(clear) == pkcs8.Protection("none")
    for junk in ("", "garbage", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n"
                 "-----END ENCRYPTED PRIVATE KEY-----\n", "-----BEGIN CERTIFICATE-----\n"
                 "-----END CERTIFICATE-----\n", b"\xff\x00" * 10):
        assert pkcs8.protection(junk).kdf == "unreadable"
        assert not pkcs8.protection(junk).is_current()
