"""API tokens (made once, kept hashed, roles and CA limits) and the audit log: written in
the transaction of the change, readable, and tamper-evident by its hash chain."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import select, text

from ca import audit, authority, jobs, tokens
from ca.audit import Actor
from ca.models import ApiToken, AuditEntry
from shell.db import transaction

from .conftest import PASSPHRASE, make_csr
from .test_cli import assert_one_line_error
from .test_nodes import js, ok

PASS = PASSPHRASE.encode()


def test_a_token_is_shown_once_and_kept_hashed(pkiq):
    ok(pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256"))
    made = js(pkiq("token", "create", "ci", "--role", "requester", "--ca", "R", "--json"))
    secret = made["token"]
    assert secret.startswith("pkiq_") and len(secret) == 48
    assert made["cas"] == ["R"] and made["role"] == "requester"
    listed = pkiq("token", "list", "--json")
    assert secret not in listed.stdout and secret[12:] not in listed.stdout
    with transaction(pkiq.app.sessions) as session:
        row = session.scalar(select(ApiToken))
        assert row.token_sha256 == tokens.token_hash(secret) and secret not in repr(
            session.execute(text("select * from api_tokens")).all())
        assert tokens.authenticate(session, secret, pkiq.app.clock()).name == "ci"
        for bad, said in [(None, "needs an API token"), ("Bearer x", "not a pkiq API token"),
                          ("pkiq_" + "A" * 43, "unknown API token")]:
            with pytest.raises(tokens.Unauthorized, match=said):
                tokens.authenticate(session, bad, pkiq.app.clock())
    assert_one_line_error(pkiq("token", "create", "ci", "--role", "admin"), 7, "exists")
    assert_one_line_error(pkiq("token", "create", "x y", "--role", "admin"), 3, "token name")
    assert_one_line_error(pkiq("token", "create", "z", "--role", "admin", "--ca", "nope"), 5,
                          "")
    ok(pkiq("token", "revoke", "ci"))
    with transaction(pkiq.app.sessions) as session, pytest.raises(
            tokens.Unauthorized, match="revoked"):
        tokens.authenticate(session, secret, pkiq.app.clock())
    assert_one_line_error(pkiq("token", "revoke", "ci"), 7, "revoked already")


def test_expired_tokens_and_roles(pkiq, clock):
    made = js(pkiq("token", "create", "short", "--role", "approver", "--days", "1", "--json"))
    grant = tokens.Grant("short", "approver", ("R",), 1)
    assert grant.at_least("requester") and grant.at_least("approver")
    assert not grant.at_least("admin")
    with pytest.raises(tokens.Forbidden, match="needs the admin role"):
        grant.require("admin", "making tokens")
    with pytest.raises(tokens.Forbidden, match="limited to CA"):
        grant.require_ca("Other", "approving")
    clock.advance(days=1, seconds=1)
    with transaction(pkiq.app.sessions) as session, pytest.raises(
            tokens.Unauthorized, match="expired"):
        tokens.authenticate(session, made["token"], clock())


def test_every_change_of_a_job_and_certificate_is_audited(pkiq, tmp_path, clock):
    ok(pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256",
            "--approval", "manual"))
    csr = tmp_path / "a.pem"
    csr.write_bytes(make_csr("a.example.com"))
    [row] = js(pkiq("submit", csr, "--ca", "R", "--requester", "alice", "--json"))
    ok(pkiq("jobs", "approve", row["id"], "--by", "bob"))
    with transaction(pkiq.app.sessions) as session:
        [job] = jobs.run_jobs(session, [row["id"]], lambda ca: authority.load_signer(ca, PASS),
                              clock, Actor.worker())
        serial = job.serial
    ok(pkiq("ca", "revoke", "R", serial, "--reason", "keyCompromise"))
    ok(pkiq("ca", "gencrl", "R"))
    entries = js(pkiq("audit", "--json"))
    assert [e["action"] for e in reversed(entries)] == [
        "ca.create", "job.submit", "job.approve", "cert.issue", "cert.revoke", "crl.issue"]
    by_action = {e["action"]: e for e in entries}
    assert by_action["job.submit"]["target"] == f"job:{row['id']}"
    assert by_action["job.submit"]["data"]["requester"] == "alice"
    assert by_action["job.submit"]["via"] == "cli" and by_action["job.submit"]["actor"]
    assert by_action["cert.issue"]["target"] == f"ca:R/serial:{serial}"
    assert by_action["cert.issue"]["via"] == "worker"
    assert by_action["cert.revoke"]["data"]["reason"] == "keyCompromise"
    assert by_action["crl.issue"]["target"] == "ca:R/crl:1"
    only = js(pkiq("audit", "--action", "cert.", "--json"))
    assert {e["action"] for e in only} == {"cert.issue", "cert.revoke"}
    text_out = ok(pkiq("audit")).stdout
    assert "cert.revoke" in text_out and f"ca:R/serial:{serial}" in text_out
    assert js(pkiq("audit", "verify", "--json"))["checked"] == 6


def test_a_change_that_fails_leaves_no_audit_row(pkiq):
    ok(pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256"))
    assert_one_line_error(pkiq("ca", "revoke", "R", "ABCDEF"), 5, "")
    assert [e["action"] for e in js(pkiq("audit", "--json"))] == ["ca.create"]


def test_tampering_breaks_the_chain(pkiq, clock):
    with transaction(pkiq.app.sessions) as session:
        for n in range(5):
            audit.record(session, Actor("t", "cli"), "test.entry", f"n:{n}", {"n": n}, clock())
    assert js(pkiq("audit", "verify", "--json"))["ok"]
    # edit a row's data
    with transaction(pkiq.app.sessions) as session:
        row = session.get(AuditEntry, 3)
        row.data = {"n": 99}
    broken = pkiq("audit", "verify", "--json")
    assert broken.exit_code == 9
    verdict = json.loads(broken.stdout)
    assert verdict["broken_at"] == 3 and "changed after it was written" in verdict["reason"]
    # put it back, then remove the last row: the head no longer matches
    with transaction(pkiq.app.sessions) as session:
        session.get(AuditEntry, 3).data = {"n": 2}
    assert js(pkiq("audit", "verify", "--json"))["ok"]
    with transaction(pkiq.app.sessions) as session:
        session.delete(session.get(AuditEntry, 5))
    verdict = json.loads(pkiq("audit", "verify", "--json").stdout)
    assert not verdict["ok"] and "removed" in verdict["reason"]
    # remove a middle row: a gap
    with transaction(pkiq.app.sessions) as session:
        session.delete(session.get(AuditEntry, 2))
    verdict = json.loads(pkiq("audit", "verify", "--json").stdout)
    assert verdict["broken_at"] == 2 and "missing" in verdict["reason"]


def test_concurrent_appends_keep_one_chain(app, clock):
    """Writers in parallel (threads, each its own transaction and connection) never link
    two rows to the same predecessor."""
    errors = []

    def writer(n):
        try:
            for i in range(10):
                with transaction(app.sessions) as session:
                    audit.record(session, Actor(f"w{n}", "api"), "test.entry", f"{n}:{i}",
                                 {}, clock())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with transaction(app.sessions) as session:
        verdict = audit.verify(session)
        assert verdict.ok and verdict.checked == 40
