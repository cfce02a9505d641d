"""Pushing stores to Expressways over REST, against fake Expressways that are real HTTPS
servers on 127.0.0.1 (tests/fake_expressway.py): a four-peer rollout, a peer failing
mid-rollout, retries, wrong credentials, an untrusted node, a missing endpoint, drift."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import select, text

from ca import node_credentials, nodes
from ca.models import NodeApi, PushJob
from ca.trust import fingerprint
from scheduler import upkeep
from service import drift, push
from shell.db import transaction
from shell.expressway_client import NodeApi as NodeApiClient

from . import fake_expressway as fx
from . import httpd
from .conftest import PASSPHRASE
from .httpd import Reply, make_ca
from .storepki import make_ca as store_ca
from .storepki import make_leaf
from .storepki import name as x509_name
from .test_cli import assert_one_line_error
from .test_nodes import js, make_estate, ok, run_queue

PASSWORD = "Expr3ss-way secret!"
SERVER = "/api/provisioning/certs/server"
ROOT = "/api/provisioning/certs/root"
PEERS = [f"expe{n}.example.com" for n in (1, 2, 3, 4)]


@contextlib.contextmanager
def fakes(names, **kwargs):
    """One fake Expressway per peer, each presenting a factory certificate for its own
    FQDN from the session's test CA (not one pkiq trusts)."""
    tls = fx.factory_tls()
    with contextlib.ExitStack() as stack:
        out = {}
        for name in names:
            cert, key = fx.issue(tls.ca, name, dns=(name,), days=365)
            out[name] = stack.enter_context(fx.FakeExpressway(
                cert, key, fqdn=name, password=PASSWORD, restart_downtime=0.2, **kwargs))
        yield out


def estate(pkiq, sessions, clock, peers=PEERS):
    """A cluster of ``peers``, each with its own certificate from Root and a store."""
    make_estate(pkiq)
    for name in peers[2:]:
        ok(pkiq("node", "add", name, "--role", "E", "--cluster", "edge", "--uc-domain",
                "example.com"))
    ok(pkiq("ca", "gencrl", "Root"))
    for name in peers:
        ok(pkiq("node", "csr", name, "--generate", "--key-type", "rsa2048", "--submit",
                "Root"))
    run_queue(sessions, clock)
    ok(pkiq("node", "publish"))


def connect(pkiq, boxes, *, pin=True):
    """REST settings for each peer; the factory certificate pinned by fingerprint, as an
    operator does on first contact after reading it off the console."""
    os.environ["TEST_EXPRESSWAY_PASSWORD"] = PASSWORD
    for name, box in boxes.items():
        ok(pkiq("node", "api", "set", name, "--address", "127.0.0.1", "--port",
                str(box.port), "--username", "admin", "--password-env",
                "TEST_EXPRESSWAY_PASSWORD"))
        if pin:
            ok(pkiq("node", "api", "pin", name, "--fingerprint",
                    fingerprint(box.presented)))


def active_cert(pkiq, name) -> x509.Certificate:
    with transaction(pkiq.app.sessions) as session:
        return node_credentials.certificate(
            node_credentials.active(session, nodes.get_node(session, name)))


def _root(pkiq) -> x509.Certificate:
    store = pkiq.app.settings.effective_stores_dir / PEERS[0] / "current"
    return x509.load_pem_x509_certificates((store / "trusted-ca.pem").read_bytes())[0]


def writes(box) -> list[str]:
    return [f"{s.method} {s.path}" for s in box.requests if s.method != "GET"]


# ---------------------------------------------------------------- rollouts

def test_four_peer_rollout_gives_each_peer_its_own_certificate(pkiq, sessions, clock):
    estate(pkiq, sessions, clock)
    with fakes(PEERS) as boxes:
        # First contact: pin shows the fingerprint and pins nothing (exit 9); a wrong
        # fingerprint is refused; the right one is pinned.
        shown = pkiq("node", "api", "set", PEERS[0], "--address", "127.0.0.1", "--port",
                     str(boxes[PEERS[0]].port), "--username", "admin")
        ok(shown)
        probe = pkiq("node", "api", "pin", PEERS[0])
        assert probe.exit_code == 9 and fingerprint(boxes[PEERS[0]].presented) in probe.stdout
        assert js(pkiq("node", "api", "show", PEERS[0], "--json"))["pin_sha256"] is None
        assert_one_line_error(pkiq("node", "api", "pin", PEERS[0], "--fingerprint", "ab" * 32),
                              3, "nothing pinned")
        connect(pkiq, boxes)

        result = pkiq("cluster", "rollout", "edge", "--restart", "--json")
        assert result.exit_code == 0, (result.output, result.stderr)
        view = json.loads(result.stdout)
        assert view["state"] == "done" and view["peers"] == PEERS
        assert [j["state"] for j in view["jobs"]] == ["done"] * 4
        root = _root(pkiq)
        for name, box in boxes.items():
            mine = active_cert(pkiq, name)
            assert fingerprint(box.server_cert) == fingerprint(mine)  # its own, not a peer's
            assert name in mine.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
            assert fingerprint(box.presented) == fingerprint(mine)  # after its restart
            assert fingerprint(root) in {fingerprint(c) for c in box.trusted}
            assert box.restarts == 1
            assert all(s.username == "admin" for s in box.requests)
        # every job says what it pushed: the store generation and the certificate
        for job in view["jobs"]:
            assert job["generation"] == 1 and job["server_sha256"] and job["attempts"] == 1
            assert job["result"]["handshake"] == "presents the new certificate"
        # the factory pin gave way to the certificate pkiq pushed and verified
        assert js(pkiq("node", "api", "show", PEERS[0], "--json"))["pin_sha256"] == \
            fingerprint(active_cert(pkiq, PEERS[0]))

        # Nothing changed: a second rollout uploads nothing and restarts nothing.
        before = {name: len(writes(box)) for name, box in boxes.items()}
        again = js(pkiq("cluster", "rollout", "edge", "--restart", "--json"))
        assert again["state"] == "done"
        assert {name: len(writes(box)) for name, box in boxes.items()} == before
        assert all(box.restarts == 1 for box in boxes.values())
        # and the nodes are in sync
        assert all(r["in_sync"] for r in js(pkiq("node", "drift", "--json")))


def test_without_restart_the_rollout_pauses_until_the_peer_restarts(pkiq, sessions, clock):
    peers = PEERS[:2]
    estate(pkiq, sessions, clock, peers)
    with fakes(peers) as boxes:
        connect(pkiq, boxes)
        first = pkiq("cluster", "rollout", "edge")
        assert first.exit_code == 9
        assert "paused at expe1.example.com" in first.stdout
        assert "pkiq node restart expe1.example.com" in first.stdout
        one, two = boxes[peers[0]], boxes[peers[1]]
        assert one.pending_restart and one.restarts == 0  # pkiq never restarts unasked
        assert two.requests == []  # the second peer is untouched
        # another rollout cannot start over the paused one
        assert_one_line_error(pkiq("cluster", "rollout", "edge"), 7, "resume it")

        ok(pkiq("node", "restart", peers[0], "--yes"))
        assert one.restarts == 1
        one.wait_up()
        second = pkiq("cluster", "rollout", "edge", "--resume")
        assert second.exit_code == 9 and "paused at expe2.example.com" in second.stdout
        assert_one_line_error(pkiq("node", "restart", peers[1]), 3, "--yes")
        ok(pkiq("node", "restart", peers[1], "--yes"))
        two.wait_up()
        done = js(pkiq("cluster", "rollout", "edge", "--resume", "--json"))
        assert done["state"] == "done"
        assert fingerprint(two.presented) == fingerprint(active_cert(pkiq, peers[1]))
        # the first peer's server certificate was uploaded once, not again on resume
        assert writes(one).count(f"POST {SERVER}") == 1


def test_a_peer_failing_mid_rollout_stops_it_and_resume_finishes(pkiq, sessions, clock):
    peers = PEERS[:3]
    estate(pkiq, sessions, clock, peers)
    with fakes(peers) as boxes:
        connect(pkiq, boxes)
        boxes[peers[1]].fail(SERVER, 400, times=1, message=fx.MSG_KEY_MISMATCH)
        result = pkiq("cluster", "rollout", "edge", "--restart", "--json")
        assert result.exit_code == 10  # the node refused
        view = json.loads(result.stdout)
        assert view["state"] == "stopped" and view["current"] == peers[1]
        assert fx.MSG_KEY_MISMATCH in view["error"]
        assert f"not touched: {peers[2]}" in view["error"]
        assert [j["state"] for j in view["jobs"]] == ["done", "failed", "queued"]
        assert view["jobs"][1]["attempts"] == 1  # a 4xx is not retried
        assert boxes[peers[2]].requests == []
        with transaction(pkiq.app.sessions) as session:
            keys = {p.key: p for p in upkeep.node_problems(session)}
        assert keys["rollout:cluster:edge"].severity == "critical"
        assert fx.MSG_KEY_MISMATCH in keys["rollout:cluster:edge"].summary

        resumed = js(pkiq("rollout", "resume", str(view["id"]), "--json"))
        assert resumed["state"] == "done"
        assert [j["state"] for j in resumed["jobs"]] == ["done"] * 3
        for name in peers:
            assert fingerprint(boxes[name].presented) == fingerprint(active_cert(pkiq, name))
        assert writes(boxes[peers[0]]).count(f"POST {SERVER}") == 1  # not pushed twice
        with transaction(pkiq.app.sessions) as session:
            assert not [p for p in upkeep.node_problems(session) if p.key.startswith("rollout")]


def test_no_answer_and_5xx_are_retried_with_backoff(pkiq, sessions, clock):
    peers = PEERS[:2]
    estate(pkiq, sessions, clock, peers)
    with fakes(peers) as boxes:
        connect(pkiq, boxes)
        boxes[peers[0]].fail(ROOT, 503, times=1, message="Service temporarily unavailable")
        boxes[peers[0]].drop(ROOT, times=1)
        rollout = push.start(pkiq.app, cluster="edge", restart=True)
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
        assert view["state"] == "waiting"
        job = view["jobs"][0]
        assert job["state"] == "retrying" and job["attempts"] == 1 and "503" in job["error"]
        assert "Service temporarily unavailable" in job["error"]
        first_wait = dt.datetime.fromisoformat(view["next_try_at"]) - clock()
        assert first_wait == dt.timedelta(seconds=10)
        # not yet due: nothing is tried
        assert push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())[
            "jobs"][0]["attempts"] == 1
        assert push.due(pkiq.app, push.stale_after(pkiq.app.settings)) == []
        clock.advance(seconds=10)
        assert push.due(pkiq.app, push.stale_after(pkiq.app.settings)) == [rollout["id"]]
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
        job = view["jobs"][0]
        assert job["attempts"] == 2 and "no answer" in job["error"]
        second_wait = dt.datetime.fromisoformat(view["next_try_at"]) - clock()
        assert second_wait == dt.timedelta(seconds=20)  # doubled
        clock.advance(seconds=20)
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
        assert view["state"] == "done" and view["jobs"][0]["attempts"] == 3
        assert view["jobs"][0]["error"] is None


def test_a_node_that_never_answers_fails_after_the_attempts(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    with fakes(PEERS[:1]) as boxes:
        connect(pkiq, boxes)
        boxes[PEERS[0]].fail("/api/raml", 502, times=100)
        rollout = push.start(pkiq.app, node=PEERS[0])
        for _ in range(pkiq.app.settings.push_attempts):
            view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
            clock.advance(hours=1)
        assert view["state"] == "stopped"
        assert "gave up after 5 attempts" in view["error"]
        assert view["jobs"][0]["attempts"] == 5


# ---------------------------------------------------------------- credentials and TLS

def test_wrong_credentials_fail_at_once_and_the_password_is_never_shown(pkiq, sessions,
                                                                        clock, caplog):
    estate(pkiq, sessions, clock, PEERS[:2])
    caplog.set_level(logging.DEBUG)
    with fakes(PEERS[:1]) as boxes:
        box = boxes[PEERS[0]]
        connect(pkiq, boxes)
        box.password = "changed on the node"
        result = pkiq("node", "push", PEERS[0], "--json")
        assert result.exit_code == 10
        view = json.loads(result.stdout)
        assert view["state"] == "stopped" and view["jobs"][0]["attempts"] == 1
        assert "refused the credentials of 'admin' (401)" in view["error"]
        assert fx.MSG_AUTH in view["error"]
        assert all(s.method == "GET" for s in box.requests)  # nothing was changed
        shown = js(pkiq("node", "api", "show", PEERS[0], "--json"))
        assert shown["password"] == "sealed"
        everything = [result.output, result.stderr or "", caplog.text,
                      pkiq("rollout", "show", str(view["id"]), "--json").stdout,
                      json.dumps(shown)]
        with transaction(pkiq.app.sessions) as session:
            row = session.scalar(select(NodeApi))
            assert PASSWORD not in row.password_sealed
            everything += [json.dumps(j.result) + str(j.error)
                           for j in session.scalars(select(PushJob))]
            dump = session.execute(text("select * from node_apis")).all()
            everything.append(repr(dump))
        assert not [t for t in everything if PASSWORD in t]


def test_password_file_must_be_private(pkiq, sessions, clock, tmp_path):
    estate(pkiq, sessions, clock, PEERS[:2])
    secret = tmp_path / "expe1.password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o644)
    assert_one_line_error(pkiq("node", "api", "set", PEERS[0], "--username", "admin",
                               "--password-file", str(secret)), 3, "chmod 600")
    secret.chmod(0o600)
    view = js(pkiq("node", "api", "set", PEERS[0], "--username", "admin", "--password-file",
                   str(secret), "--json"))
    assert view["password"] == f"file {secret}"
    assert_one_line_error(pkiq("node", "api", "set", PEERS[0], "--password-env", "X",
                               "--password-stdin"), 3, "one way")


def test_an_untrusted_node_gets_no_credentials(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    with fakes(PEERS[:1]) as boxes:
        box = boxes[PEERS[0]]
        connect(pkiq, boxes, pin=False)  # its CA is neither in the trusted list nor the system's
        result = pkiq("node", "push", PEERS[0], "--json")
        assert result.exit_code == 12
        view = json.loads(result.stdout)
        assert "TLS verification failed" in view["error"]
        assert "pkiq node api pin" in view["error"]
        assert box.requests == []  # the password never left for an unverified server
        assert view["jobs"][0]["attempts"] == 1  # not retried: the same certificate awaits

        # A pin that does not match what the node presents (someone in between) is refused.
        other = fx.issue(make_ca("Somebody else"), PEERS[0], dns=(PEERS[0],))[0]
        with transaction(pkiq.app.sessions) as session:
            row = session.scalar(select(NodeApi))
            row.pin_sha256 = fingerprint(other)
        ok(pkiq("rollout", "cancel", str(view["id"])))
        result = pkiq("node", "push", PEERS[0], "--json")
        assert "not the pinned one" in json.loads(result.stdout)["error"]
        assert box.requests == []


def test_a_missing_endpoint_is_named_before_anything_changes(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    with fakes(PEERS[:1], raml=fx.make_raml(without=["/provisioning/restart"])) as boxes:
        box = boxes[PEERS[0]]
        connect(pkiq, boxes)
        view = json.loads(pkiq("node", "push", PEERS[0], "--restart", "--json").stdout)
        assert view["state"] == "stopped"
        assert "does not describe POST /api/provisioning/restart" in view["error"]
        assert "--endpoint NAME=PATH" in view["error"]
        assert writes(box) == []
        # a release with other names: the site sets them, and the RAML says they exist
        ok(pkiq("rollout", "cancel", str(view["id"])))
        box.raml = fx.make_raml().replace("/restart:", "/reboot:")
        ok(pkiq("node", "api", "set", PEERS[0], "--endpoint",
                "restart=/api/provisioning/reboot"))
        view = json.loads(pkiq("node", "push", PEERS[0], "--restart", "--json").stdout)
        assert "does not describe" not in (view["error"] or "")
    with fakes(PEERS[1:2], raml="") as boxes:
        connect(pkiq, boxes)
        view = json.loads(pkiq("node", "push", PEERS[1], "--json").stdout)
        assert "does not serve its API description at /api/raml (404)" in view["error"]
        assert writes(boxes[PEERS[1]]) == []


def test_bad_endpoint_settings_are_refused(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    for bad in ("restart=https://evil.example/x", "restart=/api/../x", "nope=/api/x",
                "restart", "cert_field=a b", "server="):
        assert_one_line_error(pkiq("node", "api", "set", PEERS[0], "--username", "admin",
                                   "--endpoint", bad), 3, "")
    assert_one_line_error(pkiq("node", "api", "show", PEERS[0]), 5, "no REST API settings")


# ---------------------------------------------------------------- drift

def test_drift_after_changes_behind_pkiqs_back(pkiq, sessions, clock):
    peers = PEERS[:2]
    estate(pkiq, sessions, clock, peers)
    with fakes(peers) as boxes:
        connect(pkiq, boxes)
        assert js(pkiq("cluster", "rollout", "edge", "--restart", "--json"))["state"] == "done"
        assert all(r["in_sync"] for r in js(pkiq("node", "drift", "--json")))

        box = boxes[peers[0]]
        stranger = make_ca("Stranger Root")
        replaced, _key = fx.issue(stranger, peers[0], dns=(peers[0],))
        box.set_held(server_cert=replaced, trusted=[stranger.cert])  # an admin at the box
        result = pkiq("node", "drift", "--json")
        assert result.exit_code == 9
        rows = {r["node"]: r for r in json.loads(result.stdout)}
        kinds = {f["kind"] for f in rows[peers[0]]["drift"]}
        assert {"server", "missing-ca", "extra-ca"} <= kinds
        assert rows[peers[1]]["in_sync"]
        with transaction(pkiq.app.sessions) as session:
            problems = {p.key: p for p in upkeep.node_problems(session)}
        assert problems[f"drift:{peers[0]}"].severity == "critical"
        assert f"drift:{peers[1]}" not in problems

        # the CRL bundle: not fetched for longer than the node's setting is drift too
        clock.advance(hours=27)
        rows = {r["node"]: r for r in drift.check(pkiq.app, passphrase=PASSPHRASE.encode())}
        assert "crl-fetch" in {f["kind"] for f in rows[peers[1]]["drift"]}
        drift.record_bundle_fetch(pkiq.app, "node", peers[1], "127.0.0.1",
                                  f"/nodes/{peers[1]}/crls.zip")
        assert drift.check(pkiq.app, peers[1], passphrase=PASSPHRASE.encode())[0]["in_sync"]

        # pushing again puts the node right
        box.wait_up()
        assert js(pkiq("node", "push", peers[0], "--restart", "--json"))["state"] == "done"
        # pkiq removes nothing it did not put there: the stranger stays, as a warning
        found = drift.check(pkiq.app, peers[0], passphrase=PASSPHRASE.encode())[0]["drift"]
        [left] = [f for f in found if f["kind"] != "crl-fetch"]  # never fetched: still so
        assert (left["kind"], left["severity"]) == ("extra-ca", "warning")
        assert left["details"]["sha256"] == fingerprint(stranger.cert)


def test_an_unreachable_node_is_drift(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    with fakes(PEERS[:1]) as boxes:
        connect(pkiq, boxes)
        port = boxes[PEERS[0]].port
    rows = js_exit(pkiq("node", "drift", PEERS[0], "--json"), 9)
    assert rows[0]["drift"][0]["kind"] == "unreachable"
    assert str(port) in rows[0]["drift"][0]["text"]


def js_exit(result, code):
    assert result.exit_code == code, (result.output, result.stderr)
    return json.loads(result.stdout)


# ---------------------------------------------------------------- hostile nodes

RAML = fx.make_raml().encode()


@pytest.mark.parametrize("reply, said", [
    (Reply(body=b"x" * (5 * 1024 * 1024)), "over the limit"),  # declared too big
    (Reply(body=b"x" * 65536, chunked=True, repeat=100), "over 4,194,304 bytes"),  # endless
    (Reply(body=b"{}", delay=3.0), "timed out"),
    (Reply(body=b"x" * 10, drip=3.0), "timed out"),
    (Reply(body=b'{"certificates": [{"pem": "-----BEGIN CERTIFICATE-----\\nAAAA'),
     "not valid JSON"),
    (Reply(body=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
           headers={"Content-Type": "text/plain"}), "does not parse"),
    (httpd.redirect("https://elsewhere.example/api"), "(302)"),
    (Reply(status=418, body=b'{"Message": "I\'m a teapot\\u001b[2J"}'), "I'm a teapot [2J"),
])
def test_a_hostile_node_gets_one_clear_error(pkiq, sessions, clock, tmp_path, reply, said):
    """A node answering hugely, slowly, in garbage or elsewhere: drift says so in one line
    per node (exit 9), nothing is retried for ever, nothing crashes."""
    estate(pkiq, sessions, clock, PEERS[:2])
    ca_file = tmp_path / "node-ca.pem"
    ca_file.write_bytes(httpd.session_ca().cert_pem)
    ok(pkiq("trust", "add", str(ca_file)))  # its HTTPS certificate chains to the trusted list
    ok(pkiq("node", "publish"))
    pkiq.app.settings.node_api_timeout = 1.0
    with httpd.LocalServer(tls_ca=httpd.session_ca(), cert_dns=(PEERS[0],)) as node:
        node.route("/api/raml", RAML)
        node.route(ROOT, b'{"certificates": []}')
        node.route(SERVER, reply)
        os.environ["TEST_EXPRESSWAY_PASSWORD"] = PASSWORD
        ok(pkiq("node", "api", "set", PEERS[0], "--address", "127.0.0.1", "--port",
                str(node.port), "--username", "admin", "--password-env",
                "TEST_EXPRESSWAY_PASSWORD"))
        started = time.monotonic()
        result = pkiq("node", "drift", PEERS[0])
        assert time.monotonic() - started < 20
    assert result.exit_code == 9, result.output
    assert "Traceback" not in result.output + (result.stderr or "")
    [line] = [x for x in result.stdout.splitlines() if "unreachable" in x]
    assert said in line, line
    assert "\x1b" not in result.stdout


def test_a_hostile_raml_is_refused_before_any_change(pkiq, sessions, clock, tmp_path):
    estate(pkiq, sessions, clock, PEERS[:2])
    ca_file = tmp_path / "node-ca.pem"
    ca_file.write_bytes(httpd.session_ca().cert_pem)
    ok(pkiq("trust", "add", str(ca_file)))
    with httpd.LocalServer(tls_ca=httpd.session_ca(), cert_dns=(PEERS[0],)) as node:
        bomb = ["#%RAML 1.0", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        bomb += [f"a{n}: &a{n} [*a{n - 1}, *a{n - 1}, *a{n - 1}, *a{n - 1}, *a{n - 1}]"
                 for n in range(1, 20)]
        node.route("/api/raml", "\n".join(bomb).encode())
        os.environ["TEST_EXPRESSWAY_PASSWORD"] = PASSWORD
        ok(pkiq("node", "api", "set", PEERS[0], "--address", "127.0.0.1", "--port",
                str(node.port), "--username", "admin", "--password-env",
                "TEST_EXPRESSWAY_PASSWORD"))
        started = time.monotonic()
        view = json.loads(pkiq("node", "push", PEERS[0], "--json").stdout)
        assert time.monotonic() - started < 20
        assert view["state"] == "stopped"
        assert "does not describe" in view["error"]
        assert node.paths() == ["/api/raml"]  # nothing else was asked, nothing sent


# ---------------------------------------------------------------- the node's own refusals

def test_the_nodes_refusal_stops_the_rollout_in_its_own_words(pkiq, sessions, clock):
    """An Expressway refuses a second CA with the subject of one it holds (an old Root
    made again with a new key): pkiq stops there and quotes it, and adds nothing else."""
    estate(pkiq, sessions, clock, PEERS[:2])
    root = _root(pkiq)
    old_root = store_ca(root.subject).cert  # same name, another key
    with fakes(PEERS[:1]) as boxes:
        box = boxes[PEERS[0]]
        box.set_held(trusted=[old_root])
        connect(pkiq, boxes)
        view = json.loads(pkiq("node", "push", PEERS[0], "--restart", "--json").stdout)
        assert view["state"] == "stopped"
        assert "is already in the trusted CA list" in view["error"]
        assert f"POST {SERVER}" not in writes(box)  # the server certificate waits for its CA
        assert box.restarts == 0


def test_the_nodes_warnings_reach_the_push_result(pkiq, sessions, clock, tmp_path):
    """A server certificate made elsewhere with an 8192-bit key: the Expressway takes it
    and warns (SIP TLS), and the warning is on the push's row."""
    estate(pkiq, sessions, clock, PEERS[:2])
    key_file = Path(__file__).parent / "data" / "rsa8192-test-only.key"
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    outside = store_ca(x509_name((NameOID.ORGANIZATION_NAME, "Elsewhere"),
                                 (NameOID.COMMON_NAME, "Elsewhere Issuing CA")))
    cert, _ = make_leaf(outside, PEERS[0], key=key)
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ok(pkiq("node", "upload", PEERS[0], "--cert", str(tmp_path / "server.pem"), "--key",
            str(key_file)))
    with fakes(PEERS[:1]) as boxes:
        connect(pkiq, boxes)
        view = js(pkiq("node", "push", PEERS[0], "--restart", "--json"))
        assert view["state"] == "done"
        assert view["jobs"][0]["result"]["warnings"] == [fx.msg_large_rsa(8192)]
        assert fingerprint(boxes[PEERS[0]].presented) == fingerprint(cert)



def test_a_ca_pkiq_stops_trusting_leaves_the_node_and_others_cas_stay(pkiq, sessions, clock,
                                                                      tmp_path):
    """Trust removed in pkiq reaches the node (a compromised partner CA must not stay
    trusted on any peer); a CA someone else put on the node is reported, never removed."""
    estate(pkiq, sessions, clock, PEERS[:2])
    partner = store_ca(x509_name((NameOID.COMMON_NAME, "Partner Root")))
    (tmp_path / "partner.pem").write_bytes(partner.cert.public_bytes(
        serialization.Encoding.PEM))
    added = js(pkiq("trust", "add", str(tmp_path / "partner.pem"), "--json"))["added"][0]
    ok(pkiq("node", "publish"))
    stranger = store_ca(x509_name((NameOID.COMMON_NAME, "Stranger Root"))).cert
    with fakes(PEERS[:1]) as boxes:
        box = boxes[PEERS[0]]
        connect(pkiq, boxes)
        assert js(pkiq("node", "push", PEERS[0], "--restart", "--json"))["state"] == "done"
        assert fingerprint(partner.cert) in {fingerprint(c) for c in box.trusted}
        box.set_held(trusted=[*box.trusted, stranger])

        ok(pkiq("trust", "remove", added["sha256"][:16]))
        ok(pkiq("node", "publish", PEERS[0]))
        found = js_exit(pkiq("node", "drift", PEERS[0], "--json"), 9)[0]["drift"]
        kinds = {f["kind"]: f for f in found}
        assert kinds["retired-ca"]["severity"] == "critical"
        assert kinds["retired-ca"]["details"]["sha256"] == fingerprint(partner.cert)
        assert kinds["extra-ca"]["details"]["sha256"] == fingerprint(stranger)

        view = js(pkiq("node", "push", PEERS[0], "--json"))
        assert view["state"] == "done"
        assert view["jobs"][0]["result"]["removed_cas"] == ["CN=Partner Root"]
        held = {fingerprint(c) for c in box.trusted}
        assert fingerprint(partner.cert) not in held and fingerprint(stranger) in held
        assert f"DELETE {ROOT}/{fingerprint(partner.cert)}" in writes(box)
        left = {f["kind"] for f in js_exit(pkiq("node", "drift", PEERS[0], "--json"),
                                           9)[0]["drift"]}
        assert left == {"extra-ca"}


# ---------------------------------------------------------------- concurrency and surprises

class Operator:
    """A connector that opens the real client and, when the push reaches the server
    certificate upload, lets a person act on the same rollout from another shell."""

    def __init__(self, act):
        self.act, self.done = act, False

    def __call__(self, endpoint):
        api = NodeApiClient(endpoint)
        upload = api.put_server

        def put_server(*args):
            if not self.done:
                self.done = True
                self.act()
            return upload(*args)
        api.put_server = put_server
        return api


def test_cancel_during_a_push_stops_the_rollout_for_good(pkiq, sessions, clock):
    peers = PEERS[:2]
    estate(pkiq, sessions, clock, peers)
    with fakes(peers) as boxes:
        connect(pkiq, boxes)
        rollout = push.start(pkiq.app, cluster="edge", restart=True)
        operator = Operator(lambda: push.cancel(pkiq.app, rollout["id"]))
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode(),
                            connector=operator)
        assert operator.done and view["state"] == "cancelled"
        assert [j["state"] for j in view["jobs"]] == ["cancelled", "cancelled"]
        assert boxes[peers[1]].requests == []
        assert push.due(pkiq.app, dt.timedelta(0)) == []
        # a new rollout can start at once
        assert js(pkiq("cluster", "rollout", "edge", "--restart", "--json"))["state"] == "done"


def test_a_push_taken_over_does_not_move_the_rollout_twice(pkiq, sessions, clock):
    """A push that looked dead is taken over (resume) and finished by another process;
    when the first one returns, its outcome is dropped: no peer is skipped."""
    peers = PEERS[:3]
    estate(pkiq, sessions, clock, peers)
    with fakes(peers) as boxes:
        connect(pkiq, boxes)
        rollout = push.start(pkiq.app, cluster="edge", restart=True)

        def take_over():
            push.resume(pkiq.app, rollout["id"])
            other = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
            assert other["state"] == "done"

        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode(),
                            connector=Operator(take_over))
        assert view["state"] == "done" and view["position"] == 3
        assert [j["state"] for j in view["jobs"]] == ["done"] * 3
        for name in peers:
            assert fingerprint(boxes[name].presented) == fingerprint(active_cert(pkiq, name))


def test_an_unexpected_error_stops_the_rollout_with_a_line(pkiq, sessions, clock, caplog):
    estate(pkiq, sessions, clock, PEERS[:2])
    with fakes(PEERS[:1]) as boxes:
        connect(pkiq, boxes)
        rollout = push.start(pkiq.app, node=PEERS[0])

        def bug():
            raise RuntimeError("a bug in pkiq")
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode(),
                            connector=Operator(bug))
        assert view["state"] == "stopped"
        assert "internal error: RuntimeError: a bug in pkiq" in view["error"]
        with transaction(pkiq.app.sessions) as session:
            assert "rollout:node:" + PEERS[0] in {p.key for p in upkeep.node_problems(session)}


def test_a_node_going_down_mid_handshake_is_retried_not_distrusted(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    with fakes(PEERS[:1]) as boxes:
        box = boxes[PEERS[0]]
        connect(pkiq, boxes)
        box.outage(2.0)  # closes every connection before the TLS handshake
        rollout = push.start(pkiq.app, node=PEERS[0])
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
        assert view["state"] == "waiting", view["error"]
        assert "TLS verification" not in view["jobs"][0]["error"]
        box.wait_up()
        clock.advance(minutes=1)
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
        assert view["state"] in ("done", "paused")


def test_plain_http_on_the_port_says_so(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    with httpd.LocalServer() as plain:
        os.environ["TEST_EXPRESSWAY_PASSWORD"] = PASSWORD
        ok(pkiq("node", "api", "set", PEERS[0], "--address", "127.0.0.1", "--port",
                str(plain.port), "--username", "admin", "--password-env",
                "TEST_EXPRESSWAY_PASSWORD"))
        [row] = js_exit(pkiq("node", "drift", PEERS[0], "--json"), 9)
        assert "is that port HTTPS?" in row["drift"][0]["text"]
        assert plain.requests == []  # no request, no password, in clear


def test_a_slow_restart_is_waited_for_not_repeated(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    pkiq.app.settings.restart_wait_seconds = 1
    with fakes(PEERS[:1]) as boxes:
        box = boxes[PEERS[0]]
        box.down_for(3.0)
        connect(pkiq, boxes)
        rollout = push.start(pkiq.app, node=PEERS[0], restart=True)
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
        assert view["state"] == "waiting" and "after the restart" in view["jobs"][0]["error"]
        assert box.restarts == 1
        box.wait_up()
        clock.advance(minutes=1)
        view = push.advance(pkiq.app, rollout["id"], passphrase=PASSPHRASE.encode())
        assert view["state"] == "done" and box.restarts == 1  # waited for, not restarted again
        assert fingerprint(box.presented) == fingerprint(active_cert(pkiq, PEERS[0]))


def test_refused_credentials_are_not_sent_again_by_the_drift_check(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    with fakes(PEERS[:1]) as boxes:
        box = boxes[PEERS[0]]
        connect(pkiq, boxes)
        box.password = "rotated on the node"
        first = js_exit(pkiq("node", "drift", PEERS[0], "--json"), 9)[0]["drift"][0]
        assert "(401)" in first["text"]
        seen = len(box.requests)
        second = js_exit(pkiq("node", "drift", PEERS[0], "--json"), 9)[0]["drift"][0]
        assert "not sent again" in second["text"] and len(box.requests) == seen
        os.environ["TEST_EXPRESSWAY_PASSWORD"] = "rotated on the node"
        ok(pkiq("node", "api", "set", PEERS[0], "--password-env", "TEST_EXPRESSWAY_PASSWORD"))
        rows = js(pkiq("node", "push", PEERS[0], "--restart", "--json"))
        assert rows["state"] == "done"
        assert js(pkiq("node", "drift", PEERS[0], "--json"))[0]["in_sync"]


def test_fingerprints_as_tools_print_them_and_overlapping_rollouts(pkiq, sessions, clock):
    estate(pkiq, sessions, clock, PEERS[:2])
    with fakes(PEERS[:2]) as boxes:
        connect(pkiq, boxes, pin=False)
        fp = fingerprint(boxes[PEERS[0]].presented).upper()
        spelled = "SHA256:" + ":".join(fp[i:i + 2] for i in range(0, 64, 2))
        assert js(pkiq("node", "api", "pin", PEERS[0], "--fingerprint", spelled, "--json"))[
            "pinned"] == fp.lower()
        # a node push while its cluster has an open rollout is refused, naming it
        rollout = push.start(pkiq.app, cluster="edge")
        assert_one_line_error(pkiq("node", "push", PEERS[1]), 7,
                              f"rollout {rollout['id']} (cluster:edge)")
