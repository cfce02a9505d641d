"""The issue's proof with real TLS: a server on 127.0.0.1 that takes its certificate, key,
trusted CAs and CRLs from a node's published store (through ``current``, read again for
every connection) accepts two clients pkiq issued; once one of them is revoked, beat's
tick renews the CRL on its own, the stores tick republishes the node on its own, and the
same server refuses the revoked client while the other still gets in. The real ``openssl
verify`` agrees on the store's ``capath``.

Time: the fake clock starts a few minutes before the wall clock (OpenSSL checks validity
against the wall clock), so the certificates and CRLs are valid for the real handshakes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca import authority
from scheduler import tick
from service import stores

from .conftest import PASSPHRASE, FakeClock, make_csr, openssl
from .test_nodes import js, ok, run_queue

PASS = PASSPHRASE.encode()
NODE = "expe1.example.com"
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def clock() -> FakeClock:
    """Ten minutes behind the wall clock: pkiq's times stay in the past for OpenSSL."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=10)
    return FakeClock(start)


class StoreServer:
    """A TLS server on 127.0.0.1 configured from ``store/current`` for each connection, as
    a service reloading its files would be: a republished store takes effect at once.
    It requires a client certificate checked against the store's ``capath`` (trusted CAs
    and CRLs, the whole chain), answers ``pong:`` + what it got, and records each
    connection's outcome."""

    def __init__(self, store: Path):
        self.current = store / "current"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.outcomes: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def context(self) -> ssl.SSLContext:
        """``current`` is resolved once, so the certificate, the key and the CRLs all come
        from one generation even if a publisher swaps the link between two opens (reading
        ``current/fullchain.pem`` then ``current/privkey.pem`` could pair a new certificate
        with the old key)."""
        generation = self.current.resolve(strict=True)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(generation / "fullchain.pem", generation / "privkey.pem")
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(capath=str(generation / "capath"))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN  # every CA's CRL, leaf up
        return context

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self.listener.accept()
            except OSError:  # closed
                return
            with conn:
                conn.settimeout(10)
                try:
                    with self.context().wrap_socket(conn, server_side=True) as tls:
                        data = tls.recv(64)
                        tls.sendall(b"pong:" + data)
                        self.outcomes.append("ok")
                except (ssl.SSLError, OSError) as exc:
                    self.outcomes.append(f"refused: {exc}")

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=10)


def connect(port: int, store: Path, cert: Path, key: Path,
            servers: list[str] | None = None) -> bytes:
    """A client that verifies the server against the store's trusted CA list and by name,
    presents ``cert``, sends a ping and returns the answer (TLS 1.3: a refused client
    certificate shows as an alert on the first read). ``servers`` collects the serial of
    the server certificate it met."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=store / "current" / "trusted-ca.pem")
    context.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=NODE) as tls:
        if servers is not None:
            servers.append(tls.getpeercert()["serialNumber"])
        tls.sendall(b"ping")
        return tls.recv(64)


def client_credentials(pkiq, folder: Path, name: str) -> tuple[Path, Path, str]:
    """A clientAuth certificate of CA Issuing for ``name``, its key and its serial."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = folder / f"{name}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    csr = folder / f"{name}.csr"
    csr.write_bytes(make_csr(name, sans=(name,), key=key))
    cert = folder / f"{name}.pem"
    issued = js(pkiq("ca", "sign", "Issuing", csr, "--profile", "client", "--out", cert,
                     "--json"))
    return cert, key_path, issued["serial"]


def openssl_verify(store: Path, cert: Path, attime: dt.datetime | None = None):
    args = ["verify", "-CApath", str(store / "current" / "capath"), "-crl_check_all"]
    if attime is not None:
        args += ["-attime", str(int(attime.timestamp()))]
    return openssl(*args, str(cert), check=False)


def published(outcomes) -> list[tuple[str, str, int | None]]:
    return [(o.node, o.state, o.generation) for o in outcomes]


def manifest(store: Path) -> dict:
    return json.loads((store / "current" / "manifest.json").read_text())


def crl_numbers(store: Path) -> dict[str, str]:
    return {c["issuer"]: c["number"] for c in manifest(store)["crls"]}


def beat_tick(app, clock):
    """What beat's CRL tick does, with the test's clock and no alert channel."""
    return tick.tick(app.sessions, clock, send=lambda *_: [],
                     signer_for=lambda ca: authority.load_signer(ca, PASS))


def make_estate(pkiq, sessions, clock) -> Path:
    """Root and Issuing with their CRLs; node expe1 trusting Issuing (and so Root), its key
    made here and its certificate signed by the queue; its store published once."""
    ok(pkiq("ca", "create", "Root", "--subject", "/C=GB/O=Example/CN=Example Root",
            "--key-type", "ec-p256"))
    ok(pkiq("ca", "create", "Issuing", "--parent", "Root", "--subject",
            "/C=GB/O=Example/CN=Example Issuing", "--key-type", "ec-p256"))
    for name in ("Root", "Issuing"):
        ok(pkiq("ca", "gencrl", name))
    ok(pkiq("trustset", "create", "edge-trust", "Issuing"))
    ok(pkiq("node", "add", NODE, "--role", "E", "--trusted-set", "edge-trust"))
    ok(pkiq("node", "csr", NODE, "--generate", "--key-type", "rsa2048", "--submit",
            "Issuing"))
    [job] = run_queue(sessions, clock)
    assert job.state == "issued", job.error
    [first] = js(pkiq("node", "publish", NODE, "--json"))
    assert (first["state"], first["generation"], first["gaps"]) == ("published", 1, [])
    return Path(first["path"]).parent.parent  # the store's root, above generations/1


def test_a_revocation_reaches_the_tls_server_through_the_scheduled_ticks(
        app, pkiq, sessions, clock, tmp_path):
    store = make_estate(pkiq, sessions, clock)
    assert os.readlink(store / "current") == "generations/1"
    client1, key1, serial1 = client_credentials(pkiq, tmp_path, "client1.example.com")
    client2, key2, _serial2 = client_credentials(pkiq, tmp_path, "client2.example.com")

    server = StoreServer(store)
    try:
        assert connect(server.port, store, client1, key1) == b"pong:ping"
        assert connect(server.port, store, client2, key2) == b"pong:ping"
        assert server.outcomes == ["ok", "ok"]
        for cert in (client1, client2):
            assert openssl_verify(store, cert).returncode == 0

        # Revoked now, on the CRL of Issuing only once one is issued: nothing is run by hand
        # from here on, only what beat runs (the CRL tick, then the stores tick).
        ok(pkiq("ca", "revoke", "Issuing", serial1, "--reason", "keyCompromise"))
        before = crl_numbers(store)
        clock.advance(minutes=1)
        report = beat_tick(app, clock)
        renewed = {o.ca: o for o in report.own_crls}
        assert "Issuing" in renewed and renewed["Issuing"].error is None
        assert "revoked after CRL" in renewed["Issuing"].reason  # not waiting for the overlap
        assert published(stores.publish(app, passphrase=PASS, due_only=True)) == [
            (NODE, "published", 2)]
        assert os.readlink(store / "current") == "generations/2"
        issuing = "/C=GB/O=Example/CN=Example Issuing"
        assert int(crl_numbers(store)[issuing]) > int(before[issuing])
        # a second stores tick finds nothing to do
        assert published(stores.publish(app, passphrase=PASS, due_only=True)) == [
            (NODE, "skipped", 2)]

        with pytest.raises((ssl.SSLError, ConnectionError)):
            connect(server.port, store, client1, key1)
        assert connect(server.port, store, client2, key2) == b"pong:ping"
        refused, accepted = server.outcomes[2:]
        assert "certificate revoked" in refused, refused
        assert accepted == "ok"
    finally:
        server.close()

    revoked = openssl_verify(store, client1)
    assert revoked.returncode != 0 and b"certificate revoked" in revoked.stdout + \
        revoked.stderr, revoked
    good = openssl_verify(store, client2)
    assert good.returncode == 0 and b": OK" in good.stdout, good


def test_crls_near_their_next_update_are_renewed_and_republished_without_a_revocation(
        app, pkiq, sessions, clock):
    """The other scheduled path: no revocation, but the CRLs come within beat's overlap of
    their nextUpdate; the tick renews them and the stores tick republishes. OpenSSL checks
    the store at the fake time (``-attime``): the wall clock is days behind it by then."""
    store = make_estate(pkiq, sessions, clock)
    before = crl_numbers(store)
    next_update = dt.datetime.fromisoformat(
        manifest(store)["crls"][0]["next_update"].replace("Z", "+00:00"))
    clock.now = next_update - dt.timedelta(hours=2)  # inside the default 24-hour overlap
    assert published(stores.publish(app, passphrase=PASS, due_only=True)) == [
        (NODE, "skipped", 1)]  # nothing changed yet: the store is left alone
    report = beat_tick(app, clock)
    assert sorted(o.ca for o in report.own_crls if o.error is None) == ["Issuing", "Root"]
    assert all("nextUpdate" in o.reason for o in report.own_crls)
    [outcome] = stores.publish(app, passphrase=PASS, due_only=True)
    assert (outcome.state, outcome.generation, outcome.gaps) == ("published", 2, [])
    after = crl_numbers(store)
    assert all(int(after[issuer]) > int(before[issuer]) for issuer in before)
    server_pem = store / "current" / "server.pem"
    checked = openssl_verify(store, server_pem, attime=clock())
    assert checked.returncode == 0, checked
    late = openssl_verify(store, server_pem, attime=clock() + dt.timedelta(days=6))
    assert late.returncode == 0, late  # the new CRLs reach a week past the renewal


def test_handshakes_during_republishing_always_find_one_whole_generation(
        app, pkiq, sessions, clock, tmp_path):
    """A client connects over and over while the node gets new keys and certificates and
    new CRLs, each published as a new generation: every handshake succeeds, so the server
    never met a certificate without its key, nor a store without its CRLs."""
    store = make_estate(pkiq, sessions, clock)
    ok(pkiq("node", "set", NODE, "--keep", "100"))  # no generation pruned under a reader
    client, key, _serial = client_credentials(pkiq, tmp_path, "client.example.com")
    server = StoreServer(store)
    stop = threading.Event()
    answers: list[bytes | str] = []
    met: list[str] = []  # the server certificates the client met, in order

    def keep_connecting():
        while not stop.is_set() or len(answers) < 20:
            try:
                answers.append(connect(server.port, store, client, key, met))
            except (ssl.SSLError, OSError) as exc:
                answers.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=keep_connecting)
    thread.start()
    published = [int(manifest(store)["server"]["serial"], 16)]
    try:
        for _round in range(4):
            clock.advance(minutes=1)
            ok(pkiq("node", "csr", NODE, "--generate", "--key-type", "rsa2048", "--submit",
                    "Issuing"))
            [job] = run_queue(sessions, clock)
            assert job.state == "issued", job.error
            ok(pkiq("ca", "gencrl", "Issuing"))
            [outcome] = stores.publish(app, passphrase=PASS, due_only=True)
            assert outcome.state == "published", outcome
            published.append(int(manifest(store)["server"]["serial"], 16))
    finally:
        stop.set()
        thread.join(timeout=60)
        server.close()
    assert len(set(published)) == 5 and os.readlink(store / "current") == "generations/5"
    assert [a for a in answers if a != b"pong:ping"] == []
    assert [o for o in server.outcomes if o != "ok"] == []
    assert len(answers) >= 20
    # the handshakes ran across the republishing: the client met several of the server's
    # certificates, in the order they were published
    seen = list(dict.fromkeys(int(serial, 16) for serial in met))
    assert len(seen) >= 2 and set(seen) <= set(published), (seen, published)
    assert seen == sorted(seen, key=published.index)
