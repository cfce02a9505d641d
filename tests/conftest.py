"""Shared fixtures: a real SQLite file and a real PostgreSQL schema per test, an injected
clock, the CLI through click's runner, and request builders (pyca and the openssl binary)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text

from ca import pkcs8
from pkiq.cli import cli
from pkiq.cli_common import make_context
from service import ServiceContext
from shell.db import make_engine, migrate, session_factory
from shell.settings import Settings

POSTGRES_URL = os.environ.get("PKIQ_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PASSPHRASE = "correct horse battery staple"
T0 = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)
# The suite makes thousands of CA keys and unlocks them as often: at pkiq's 600,000 PBKDF2
# iterations (73 ms each here) that alone would add minutes. Keys made in this test process
# use 10,000 instead (still above cryptography's 2,048, so a key of an older pkiq still
# counts as one to upgrade). Only this process: a `pkiq` or worker subprocess runs with the
# real default, and tests/test_key_at_rest.py checks both that a real `pkiq ca create`
# stores 600,000 and that nothing outside the tests assigns the setting.
TEST_PBKDF2_ITERATIONS = 10_000


@pytest.fixture(scope="session", autouse=True)
def cheap_key_work_factor():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pkcs8, "PBKDF2_ITERATIONS", TEST_PBKDF2_ITERATIONS)
        yield


class FakeClock:
    """Time for tests: moves only when told to."""

    def __init__(self, now: dt.datetime = T0):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs) -> dt.datetime:
        self.now += dt.timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_admin():
    """PostgreSQL must be up: an unreachable server fails the run, it does not skip."""
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    yield engine
    engine.dispose()


def _postgres_url(postgres_admin) -> tuple[str, str]:
    schema = f"t_{secrets.token_hex(6)}"
    with postgres_admin.connect() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}", schema


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The same test over SQLite (a WAL file) and PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pkiq.db'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    url, schema = _postgres_url(admin)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'drop schema "{schema}" cascade'))


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


@pytest.fixture
def app(db_url, tmp_path, clock):
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url,
                        ca_passphrase=PASSPHRASE)
    app = make_context(settings, clock)
    yield app
    app.close()


class Cli:
    """Runs ``pkiq`` in-process on the test's service context; returns click's Result."""

    def __init__(self, app: ServiceContext):
        self.app = app
        self.runner = CliRunner()

    def __call__(self, *args, input=None, env=None):
        return self.runner.invoke(cli, [str(a) for a in args], obj=self.app, input=input,
                                  env=env, catch_exceptions=False)


@pytest.fixture
def pkiq(app) -> Cli:
    return Cli(app)


# ---------------------------------------------------------------- requests

_KEYS: dict[str, object] = {}


def cached_key(kind: str = "rsa2048"):
    """Key generation dominates test time; requests may share keys, CAs do not."""
    if kind not in _KEYS:
        if kind.startswith("rsa"):
            _KEYS[kind] = rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
        else:
            _KEYS[kind] = ec.generate_private_key(
                {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}[kind])
    return _KEYS[kind]


def make_csr(cn: str | None = "expe1.example.com", *, sans: tuple[str, ...] = (),
             key=None, extra_name: dict | None = None, extensions=(), hash_alg=None,
             der: bool = False) -> bytes:
    key = key or cached_key()
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")]
    for oid, value in (extra_name or {}).items():
        attrs.append(x509.NameAttribute(oid, value))
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    csr = builder.sign(key, hash_alg or hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def openssl(*args: str, cwd: Path | None = None, input: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """The real openssl binary (the interoperability yardstick)."""
    assert shutil.which("openssl"), "the openssl binary is required for the tests"
    return subprocess.run(["openssl", *args], cwd=cwd, input=input, capture_output=True,
                          check=check, timeout=120)


GUIDE_REQUEST_CFG = """\
[ req ]
distinguished_name = req_distinguished_name
req_extensions = v3_req
prompt = no
[ req_distinguished_name ]
C = GB
ST = England
L = London
O = Example Ltd
OU = Video
CN = {cn}
[ v3_req ]
extendedKeyUsage=serverAuth, clientAuth
{san_line}
"""


def guide_csr(folder: Path, cn: str = "cluster.example.com",
              peers: tuple[str, ...] = ("peer1.example.com", "peer2.example.com"),
              bits: int = 2048, name: str = "certcsr") -> Path:
    """A request made exactly as the guide's appendix makes it: genrsa, then
    ``openssl req -new ... -outform DER -sha1`` with serverAuth/clientAuth and cluster SANs."""
    sans = ",".join(f"DNS:{n}" for n in (cn, *peers))
    cfg = folder / f"{name}.cfg"
    cfg.write_text(GUIDE_REQUEST_CFG.format(
        cn=cn, san_line=f'subjectAltName="{sans}"' if peers else ""))
    openssl("genrsa", "-out", str(folder / f"{name}.key"), str(bits))
    out = folder / f"{name}.der"
    openssl("req", "-new", "-key", str(folder / f"{name}.key"), "-config", str(cfg),
            "-out", str(out), "-outform", "DER", "-sha1")
    return out


@pytest.fixture
def passfile(tmp_path) -> Path:
    path = tmp_path / "ca.pass"
    path.write_text(PASSPHRASE + "\n")
    return path
