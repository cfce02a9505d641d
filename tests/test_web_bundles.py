"""A client playing an Expressway's automatic CRL update: it fetches its node's ZIP and GZIP
bundles (and the cluster's) from pkiq's web app on a real uvicorn server, finds every CRL
the node needs, valid, and gets 304 on the next fetch; a republished store is served
within the cache window."""

from __future__ import annotations

import io
import sqlite3
import tarfile
import time
import zipfile

import pytest
from cryptography import x509

from ca.encoding import pem_blocks
from service import stores

from .conftest import PASSPHRASE
from .test_node_stores import current, issued_estate
from .test_nodes import ok
from .test_web_downloads import Served

PASS = PASSPHRASE.encode()
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def served(pkiq):
    server = Served(pkiq.app)
    yield server
    server.close()


def crls_in(kind: str, body: bytes) -> list[x509.CertificateRevocationList]:
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return [x509.load_der_x509_crl(archive.read(n)) for n in archive.namelist()]
    if kind == "tar.gz":
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
            return [x509.load_der_x509_crl(archive.extractfile(m).read())
                    for m in archive.getmembers()]
    return [x509.load_der_x509_crl(b.der) for b in pem_blocks(body, ("X509 CRL",))]


def wait_for_change(served, path, etag, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = served.get(path, **{"If-None-Match": etag})
        if response.status_code == 200:
            return response
        time.sleep(0.1)
    raise AssertionError(f"{path} still answers 304 after {timeout} s")


def test_an_expressway_fetches_its_bundles(pkiq, sessions, clock, served):
    issued_estate(pkiq, sessions, clock)
    ok(pkiq("ca", "create", "Partner", "--subject", "/CN=Partner Root", "--key-type",
            "ec-p256"))
    ok(pkiq("ca", "gencrl", "Partner"))
    ok(pkiq("node", "publish"))
    store = current(pkiq)
    needed = {c.issuer for c in crls_in("pem", (store / "crls.pem").read_bytes())}
    assert len(needed) == 2  # Root's and Partner's: every CA the node trusts
    etags = {}
    for kind, media in (("zip", "application/zip"), ("tar.gz", "application/gzip"),
                        ("pem", "application/x-pem-file")):
        path = f"/nodes/expe1.example.com/crls.{kind}"
        response = served.get(path)
        assert response.status_code == 200 and response.headers["content-type"] == media
        assert response.content == (store / f"crls.{kind}").read_bytes()
        crls = crls_in(kind, response.content)
        assert {c.issuer for c in crls} == needed
        assert all(c.next_update_utc > clock() for c in crls)
        assert "max-age" in response.headers["cache-control"]
        etags[kind] = response.headers["etag"]
        again = served.get(path, **{"If-None-Match": etags[kind]})
        assert again.status_code == 304 and again.content == b""
        upper = served.get(path.replace("expe1.example.com", "EXPE1.Example.COM"))
        assert upper.status_code == 200 and upper.content == response.content  # DNS: no case

    cluster = served.get("/clusters/edge/crls.zip")
    assert cluster.status_code == 200
    assert {c.issuer for c in crls_in("zip", cluster.content)} == needed
    assert served.get("/clusters/edge/crls.zip",
                      **{"If-None-Match": cluster.headers["etag"]}).status_code == 304

    # a new CRL reaches the store by the stores tick, and the pollers within the window
    clock.advance(hours=1)
    ok(pkiq("ca", "gencrl", "Root"))
    assert {o.state for o in stores.publish(pkiq.app, passphrase=PASS, due_only=True)} == {
        "published"}
    changed = wait_for_change(served, "/nodes/expe1.example.com/crls.zip", etags["zip"])
    numbers = {c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
               for c in crls_in("zip", changed.content)
               if "Example Root" in c.issuer.rfc4514_string()}
    assert numbers == {2}
    wait_for_change(served, "/clusters/edge/crls.zip", cluster.headers["etag"])


def test_bundle_requests_that_find_nothing_are_one_line_404s(pkiq, sessions, clock, served):
    issued_estate(pkiq, sessions, clock)
    for path, words in (("/nodes/nope.example.com/crls.zip", "no node"),
                        ("/nodes/expe1.example.com/crls.zip", "nothing is published"),
                        ("/nodes/expe1.example.com/privkey.pem", "no file"),
                        ("/nodes/expe1.example.com/manifest.json", "no file"),
                        ("/nodes/..%2f..%2fetc/crls.zip", ""),
                        ("/clusters/edge/crls.zip", "no peer"),
                        ("/clusters/nope/crls.zip", "no cluster")):
        response = served.get(path)
        assert response.status_code == 404, (path, response.text)
        assert words in response.text and response.text.count("\n") == 1, response.text
    ok(pkiq("node", "publish"))
    wait_for_change(served, "/nodes/expe1.example.com/crls.zip", '"none"')  # within the window
    # the private key is never served, whatever the spelling
    for path in ("/nodes/expe1.example.com/privkey.pem",
                 "/nodes/expe1.example.com/../privkey.pem",
                 "/nodes/expe1.example.com/current%2fprivkey.pem"):
        response = served.get(path)
        assert response.status_code == 404 and b"PRIVATE" not in response.content


def test_web_look_ups_do_not_wait_behind_a_sqlite_writer(pkiq, sessions, clock):
    """The web app's reads open a deferred transaction: a writer holding SQLite's write
    lock (a worker signing a batch, a refresh installing a CRL) does not delay them."""
    from service import downloads

    issued_estate(pkiq, sessions, clock)
    ok(pkiq("node", "publish"))
    writer = sqlite3.connect(pkiq.app.settings.effective_database_url.removeprefix(
        "sqlite:///"), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock until rolled back
    try:
        started = time.monotonic()
        assert ("node", "expe1.example.com") in downloads.store_versions(pkiq.app)
        assert "Root" in downloads.ca_versions(pkiq.app)
        assert downloads.node_bundle(pkiq.app, "expe1.example.com", "crls.zip").body
        assert downloads.ca_crl(pkiq.app, "Root").body
        assert time.monotonic() - started < 1.0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
