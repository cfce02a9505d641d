"""End to end: ``pkiq verify`` (the real command, a process of its own) asking pkiq's own OCSP
responder (``/ocsp/NAME`` on a real uvicorn server), on SQLite and PostgreSQL. A CA made with
``--ocsp-url`` pointing at the server writes that URL into its leaves; verify asks it and
says valid; a revocation through the service is answered revoked by the very next verify;
with the server stopped the fallback decides: ``revoked`` is exit 9, ``not-revoked`` exit 0
saying the status could not be had. CRLs are off throughout, so OCSP alone answers."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from service import cas
from service import ocsp as service_ocsp

from .conftest import PASSPHRASE, FakeClock, make_csr
from .test_nodes import ok
from .test_web_downloads import Served

PASS = PASSPHRASE.encode()


@pytest.fixture
def clock() -> FakeClock:
    """Near the real time (the verify process reads the real clock and checks the OCSP
    answer's times against it), two minutes behind, so every time pkiq stamps (notBefore,
    the revocation, thisUpdate) is already past for that process."""
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=2))


def verify(leaf: Path, ca: Path, *extra: str) -> subprocess.CompletedProcess:
    """``pkiq verify`` as an operator runs it: files mode, no database (``--json`` among
    ``extra`` for the JSON, else the lines a person reads)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKIQ_")}
    return subprocess.run([sys.executable, "-m", "pkiq", "verify", str(leaf), "--trusted",
                           str(ca), "--use-ocsp", "--no-use-crls", *extra],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_verify_asks_pkiqs_own_responder(app, pkiq, tmp_path):
    served = Served(app)
    try:
        url = served.url("/ocsp/Root")
        ok(pkiq("ca", "create", "Root", "--subject", "/C=GB/O=Example/CN=Example Root",
                "--key-type", "ec-p256", "--ocsp-url", url))
        outcomes = service_ocsp.renew_responders(app, passphrase=PASS)
        assert [o.ca for o in outcomes if o.error is None] == ["Root"]
        ca = tmp_path / "root.pem"
        ca.write_bytes(cas.show_ca(app, "Root")[1].public_bytes(serialization.Encoding.PEM))
        csr = tmp_path / "peer.csr"
        csr.write_bytes(make_csr("peer.example.com", sans=("peer.example.com",)))
        leaf = tmp_path / "peer.pem"
        serial = json.loads(ok(pkiq("ca", "sign", "Root", csr, "--out", leaf, "--json")
                                ).stdout)["serial"]
        aia = x509.load_pem_x509_certificate(leaf.read_bytes()).extensions.get_extension_for_class(
            x509.AuthorityInformationAccess).value
        assert [d.access_location.value for d in aia] == [url]

        good = verify(leaf, ca, "--json", "--fallback", "revoked")
        assert good.returncode == 0, (good.stdout, good.stderr)
        out = json.loads(good.stdout)
        assert out["result"] == "valid" and out["path"][0]["revocation"] == "good"
        assert "OCSP response good" in out["path"][0]["detail"]
        assert f"OCSP {url}: answered" in out["notes"]

        cas.revoke(app, "Root", serial, reason="keyCompromise")
        revoked = verify(leaf, ca, "--json", "--fallback", "revoked")
        assert revoked.returncode == 4, (revoked.stdout, revoked.stderr)
        line = json.loads(revoked.stdout)["path"][0]
        assert line["state"] == "revoked" and "OCSP" in line["detail"]
        assert "the certificate was revoked (OCSP)" in line["detail"], line
        assert "compromised key" in line["detail"] and "trust anchor" not in line["detail"]
    finally:
        served.close()

    # nobody listens on the port now
    strict = verify(leaf, ca, "--json", "--fallback", "revoked")
    assert strict.returncode == 9, (strict.stdout, strict.stderr)
    out = json.loads(strict.stdout)
    assert out["result"] == "undetermined" and "gave no answer" in out["path"][0]["detail"]
    assert any(n.startswith(f"OCSP {url}: ") and "answered" not in n for n in out["notes"])

    lenient = verify(leaf, ca, "--fallback", "not-revoked")
    assert lenient.returncode == 0, (lenient.stdout, lenient.stderr)
    assert "treated as not revoked" in lenient.stdout
    assert f"OCSP {url}: " in lenient.stderr  # why: the responder could not be reached

