"""Publishing node stores through the CLI and the stores tick: the files, coverage gaps,
nothing written when nothing changed, failures isolated and retried, rollback."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import authority
from scheduler import tick, upkeep
from service import stores
from shell.db import transaction

from .conftest import PASSPHRASE, openssl
from .test_cli import assert_one_line_error
from .test_nodes import js, make_estate, ok, run_queue

PASS = PASSPHRASE.encode()


def current(pkiq, node="expe1.example.com"):
    return pkiq.app.settings.effective_stores_dir / node / "current"


def issued_estate(pkiq, sessions, clock):
    make_estate(pkiq)
    ok(pkiq("ca", "gencrl", "Root"))
    for node in ("expe1.example.com", "expe2.example.com"):
        ok(pkiq("node", "csr", node, "--generate", "--key-type", "rsa2048", "--submit",
                "Root"))
    run_queue(sessions, clock)


def test_publish_writes_the_expressway_files(pkiq, sessions, clock):
    issued_estate(pkiq, sessions, clock)
    outcomes = js(pkiq("node", "publish", "--json"))
    assert [(o["node"], o["state"], o["generation"]) for o in outcomes] == [
        ("expe1.example.com", "published", 1), ("expe2.example.com", "published", 1)]
    store = current(pkiq)
    leaf = x509.load_pem_x509_certificate((store / "server.pem").read_bytes())
    assert len(x509.load_pem_x509_certificates((store / "server.pem").read_bytes())) == 1
    key_file = store / "privkey.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key_bytes = key_file.read_bytes()
    assert key_bytes.endswith(b"-----\n") and b"ENCRYPTED" not in key_bytes
    key = serialization.load_pem_private_key(key_bytes, None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    node = js(pkiq("node", "show", "expe1.example.com", "--json"))
    assert f"{leaf.serial_number:X}" == node["certificate"]["serial"]
    chain = x509.load_pem_x509_certificates((store / "chain.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=Example Root,O=Example,C=GB"]
    trusted = x509.load_pem_x509_certificates((store / "trusted-ca.pem").read_bytes())
    assert [c.subject for c in trusted] == [chain[0].subject]
    crl = x509.load_pem_x509_crl((store / "crls.pem").read_bytes())
    assert crl.issuer == chain[0].subject
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["digest"] and "privkey.pem" in {f for f in manifest["files"]}
    assert (store / "crls.zip").is_file() and (store / "crls.tar.gz").is_file()
    assert js(pkiq("node", "check", "--json"))[0]["gaps"] == []

    # nothing changed: nothing written, the same generation
    again = js(pkiq("node", "publish", "expe1.example.com", "--json"))
    assert again[0]["state"] == "skipped" and again[0]["bytes_written"] == 0
    forced = js(pkiq("node", "publish", "expe1.example.com", "--force", "--json"))
    assert forced[0]["state"] == "unchanged" and forced[0]["generation"] == 1


def test_a_crl_change_republishes_and_rollback_goes_back(pkiq, sessions, clock):
    issued_estate(pkiq, sessions, clock)
    ok(pkiq("node", "publish"))
    first = (current(pkiq) / "crls.pem").read_bytes()
    clock.advance(hours=1)
    ok(pkiq("ca", "gencrl", "Root"))
    done = stores.publish(pkiq.app, passphrase=PASS, due_only=True)  # the stores tick
    assert {o.state for o in done} == {"published"} and {o.generation for o in done} == {2}
    assert (current(pkiq) / "crls.pem").read_bytes() != first
    view = js(pkiq("node", "rollback", "expe1.example.com", "--json"))
    assert view["generation"] == 1 and (current(pkiq) / "crls.pem").read_bytes() == first
    # the tick leaves a rolled-back store alone until something changes again
    assert {o.state for o in stores.publish(pkiq.app, passphrase=PASS, due_only=True)} == {
        "skipped"}
    assert (current(pkiq) / "crls.pem").read_bytes() == first
    clock.advance(hours=1)
    ok(pkiq("ca", "gencrl", "Root"))
    [one, _] = stores.publish(pkiq.app, passphrase=PASS, due_only=True)
    assert one.state == "published" and one.generation == 3
    gens = js(pkiq("node", "generations", "expe1.example.com", "--json"))
    assert gens["current"] == 3 and gens["generations"] == [1, 2, 3]
    assert_one_line_error(pkiq("node", "rollback", "nope.example.com"), 5, "no node")


def test_coverage_gaps_are_reported_recorded_and_alerted(pkiq, sessions, clock):
    make_estate(pkiq)  # Root has issued no CRL yet
    result = pkiq("node", "check", "expe1.example.com")
    assert result.exit_code == 9 and "no CRL" in result.stdout and "pkiq ca gencrl Root" in \
        result.stdout
    ok(pkiq("ca", "gencrl", "Root"))  # valid 168 hours
    assert pkiq("node", "check").exit_code == 0
    clock.advance(hours=168 - 10)  # 10 hours left, under the 26 hours of headroom
    rows = js_exit(pkiq("node", "check", "--json"), 9)
    assert rows[0]["gaps"][0]["reason"].startswith("expiring")
    stores.publish(pkiq.app, passphrase=PASS, due_only=True)
    with transaction(pkiq.app.sessions) as session:
        problems = [p for p in upkeep.node_problems(session) if p.key.startswith("coverage:")]
    assert len(problems) == 2 and {p.severity for p in problems} == {"warning"}
    clock.advance(hours=11)  # past nextUpdate: the CRL is left out and the gap is critical
    stores.publish(pkiq.app, passphrase=PASS, due_only=True)
    rows = js_exit(pkiq("node", "check", "--json"), 9)
    assert rows[0]["gaps"][0]["reason"].startswith("expired") and rows[0]["crls"] == 0
    with transaction(pkiq.app.sessions) as session:
        problems = [p for p in upkeep.node_problems(session) if p.key.startswith("coverage:")]
    assert {p.severity for p in problems} == {"critical"}


def js_exit(result, code):
    assert result.exit_code == code, (result.output, result.stderr)
    return json.loads(result.stdout)


def test_a_failing_store_is_isolated_retried_and_alerted(pkiq, sessions, clock, tmp_path):
    issued_estate(pkiq, sessions, clock)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's parent should be")
    ok(pkiq("node", "set", "expe1.example.com", "--store-dir", str(blocker / "store")))
    result = pkiq("node", "publish", "--json")
    assert result.exit_code == 9
    outcomes = {o["node"]: o for o in json.loads(result.stdout)}
    assert outcomes["expe1.example.com"]["state"] == "failed"
    assert "Not a directory" in outcomes["expe1.example.com"]["error"] or \
        "not a folder" in outcomes["expe1.example.com"]["error"]
    assert outcomes["expe2.example.com"]["state"] == "published"  # not held up
    node = js(pkiq("node", "show", "expe1.example.com", "--json"))
    assert node["publish_error"] and node["publish_due_at"] > clock().isoformat()
    with transaction(pkiq.app.sessions) as session:
        assert [p.key for p in upkeep.node_problems(session)] == ["store:expe1.example.com"]
    # the tick does not retry before the backoff; after it, and once mended, it does
    assert {o.state for o in stores.publish(pkiq.app, passphrase=PASS, due_only=True)} == {
        "skipped"}
    blocker.unlink()
    blocker.mkdir()
    clock.advance(seconds=31)
    done = {o.node: o.state for o in stores.publish(pkiq.app, passphrase=PASS, due_only=True)}
    assert done == {"expe1.example.com": "published", "expe2.example.com": "skipped"}
    assert (blocker / "store" / "current" / "server.pem").is_file()
    with transaction(pkiq.app.sessions) as session:
        assert upkeep.node_problems(session) == []
    # an operator who mends the cause does not wait for the retry time
    (blocker / "store" / "generations").chmod(0o500)
    (blocker / "store" / "generations").rename(blocker / "moved")
    (blocker / "store" / "generations").write_text("in the way")
    ok(pkiq("node", "set", "expe1.example.com", "--keep", "3"))  # something to publish
    assert js_exit(pkiq("node", "publish", "expe1.example.com", "--json"), 9)[0]["state"] \
        == "failed"
    (blocker / "store" / "generations").unlink()
    (blocker / "moved").chmod(0o755)
    (blocker / "moved").rename(blocker / "store" / "generations")
    again = js(pkiq("node", "publish", "expe1.example.com", "--json"))
    assert again[0]["state"] in ("published", "unchanged"), again


def test_retry_delay_grows_to_an_hour():
    assert [stores.retry_delay(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert stores.retry_delay(50) == dt.timedelta(hours=1)


def test_publishing_without_the_passphrase_fails_the_node_not_the_run(pkiq, sessions, clock):
    issued_estate(pkiq, sessions, clock)
    outcomes = stores.publish(pkiq.app, passphrase=None)
    assert {o.state for o in outcomes} == {"failed"}
    assert "PKIQ_CA_PASSPHRASE_FILE" in outcomes[0].error
    assert not current(pkiq).exists()
    wrong = stores.publish(pkiq.app, passphrase=b"not the passphrase at all")
    assert {o.state for o in wrong} == {"failed"} and not current(pkiq).exists()


def test_own_crls_are_renewed_before_they_enter_the_stores_headroom(pkiq, sessions, clock):
    """The CRL tick renews pkiq's CRLs at the larger of its overlap (24 h) and the stores'
    headroom, so no store ever carries one of ours with less left than the headroom."""
    issued_estate(pkiq, sessions, clock)
    ok(pkiq("crl", "schedule", "--disable"))  # no nightly run to renew everything anyway
    stores.publish(pkiq.app, passphrase=PASS)
    clock.advance(hours=168 - 25)  # 25 h left: inside the headroom, outside the overlap
    settings = pkiq.app.settings
    quiet = tick.tick(pkiq.app.sessions, clock, send=lambda *_: [], signer_for=lambda ca:
                      authority.load_signer(ca, PASS))
    assert quiet.own_crls == []  # without the stores' headroom nothing is due yet
    report = tick.tick(pkiq.app.sessions, clock, send=lambda *_: [],
                       signer_for=lambda ca: authority.load_signer(ca, PASS),
                       min_overlap=stores.headroom(settings))
    assert [o.ca for o in report.own_crls] == ["Root"]
    done = stores.publish(pkiq.app, passphrase=PASS, due_only=True)
    assert {o.state for o in done} == {"published"} and all(not o.gaps for o in done)


def test_set_members_gone_and_duplicate_subjects_are_reported(pkiq, sessions, clock,
                                                               tmp_path):
    issued_estate(pkiq, sessions, clock)
    first, second = tmp_path / "a.pem", tmp_path / "b.pem"
    for path in (first, second):  # the same subject and issuer, two keys: a re-keyed CA
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", str(tmp_path / "k.pem"), "-out", str(path), "-subj",
                "/O=Partner/CN=Partner Root", "-days", "30")
    one = js(pkiq("trust", "add", first, "--json"))["added"][0]
    ok(pkiq("trustset", "create", "partner", "Root", one["sha256"][:16]))
    ok(pkiq("node", "set", "expe1.example.com", "--trusted-set", "partner"))
    ok(pkiq("trust", "remove", one["sha256"][:16]))
    rows = js_exit(pkiq("node", "check", "expe1.example.com", "--json"), 9)
    assert any(g["reason"].startswith("missing:") and "no longer in the trusted CA list"
               in g["reason"] for g in rows[0]["gaps"])
    stores.publish(pkiq.app, passphrase=PASS)
    with transaction(pkiq.app.sessions) as session:
        problems = upkeep.node_problems(session)
    assert any(p.key.startswith("coverage:expe1") and p.severity == "critical"
               for p in problems)

    # the whole trusted CA list (a node without a set) with both certificates: refused with
    # the guide's reason, the store left as it was
    ok(pkiq("trust", "add", first))
    ok(pkiq("trust", "add", second))
    result = pkiq("node", "publish", "expe2.example.com", "--json")
    assert result.exit_code == 9
    [outcome] = json.loads(result.stdout)
    assert outcome["state"] == "failed" and "one per issuer and subject" in outcome["error"]
    assert os.readlink(current(pkiq, "expe2.example.com")) == "generations/1"  # as it was
