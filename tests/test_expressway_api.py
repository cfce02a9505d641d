"""What pkiq reads from an Expressway's REST API without talking to one: endpoint profiles,
RAML (including documents built to hurt), read-back answers, the node's own messages, drift,
and the sealed password."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography.x509.oid import NameOID

from ca import expressway_api as api
from ca import sealed
from ca.errors import BadInput, WrongPassphrase
from ca.trust import fingerprint

from . import fake_expressway as fx
from .storepki import make_ca, make_leaf, name, pem

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)


# ---------------------------------------------------------------- profiles

def test_releases_and_overrides():
    x810 = api.profile(None)
    assert x810.paths["server"] == "/api/provisioning/certs/server"
    assert x810.paths["trusted"] == "/api/provisioning/certs/root"
    v1 = api.profile("V1")
    assert v1.paths["server"] == "/api/v1/provisioning/certs/server"
    mine = api.profile("x8.10", {"restart": "/api/provisioning/sysadmin/restart", "raml": ""})
    assert mine.paths["restart"] == "/api/provisioning/sysadmin/restart"
    assert mine.paths["raml"] == ""
    with pytest.raises(BadInput, match="unknown Expressway API release"):
        api.profile("x99")


@pytest.mark.parametrize("item", [
    "restart=https://evil.example/restart", "restart=//evil.example/x", "restart=/api/../../x",
    "restart=/api/./x", "restart=/api/x?y=1", "restart=/api/x#f", "restart=api/x",
    "server=", "trusted=", "cert_field=a b", "key_field=", "unknown=/api/x", "restart",
    "restart=/api/" + "x" * 300, "restart=/api/\u00e9",
])
def test_bad_endpoint_settings_are_refused(item):
    with pytest.raises(BadInput):
        api.parse_overrides([item])


# ---------------------------------------------------------------- RAML

def test_the_fakes_raml_describes_what_pkiq_needs():
    found = api.described_paths(fx.make_raml().encode())
    for method, path in [("GET", "/api/provisioning/certs/server"),
                         ("POST", "/api/provisioning/certs/server"),
                         ("POST", "/api/provisioning/certs/root"),
                         ("POST", "/api/provisioning/restart")]:
        assert api.describes(found, method, path)
    assert api.describes(found, "DELETE", "/api/provisioning/certs/root/{fingerprint}")
    assert api.describes(found, "DELETE", "/api/provisioning/certs/root/" + "ab" * 32)
    assert not api.describes(found, "DELETE", "/api/provisioning/certs/server")
    assert not api.describes(found, "GET", "/api/provisioning/restart")
    without = api.described_paths(fx.make_raml(without=["/provisioning/restart"]).encode())
    assert not api.describes(without, "POST", "/api/provisioning/restart")


def test_flat_resources_and_a_base_uri_with_a_path():
    raml = b"#%RAML 1.0\nbaseUri: https://x.example.com/api/v1\n" \
           b"/provisioning/certs/server:\n  get:\n  post:\n"
    found = api.described_paths(raml)
    assert api.describes(found, "POST", "/api/v1/provisioning/certs/server")


@pytest.mark.parametrize("raml", [
    b"", b"just text", b"- a\n- list\n", b"key: [unclosed", b"\xff\xfe\x00garbage",
    b"a: &a [*a]\n",
])
def test_garbage_raml_is_one_clear_error(raml):
    try:
        found = api.described_paths(raml)
    except BadInput as exc:
        assert "RAML" in str(exc)
    else:
        assert not api.describes(found, "GET", "/api/provisioning/certs/server")


def test_a_raml_built_to_explode_is_refused_quickly():
    # billion laughs: every level refers to the one below nine times
    lines = ["#%RAML 1.0", "l0: &l0 {/a: {get: x}}"]
    for level in range(1, 12):
        refs = ", ".join(f"/r{n}: *l{level - 1}" for n in range(9))
        lines.append(f"l{level}: &l{level} {{{refs}}}")
    lines.append("/root: *l11")
    found = api.described_paths("\n".join(lines).encode())  # aliases walked once each
    assert ("RESOURCE", "/root") in found
    many = "#%RAML 1.0\n" + "".join(f"/r{n}:\n  get:\n" for n in range(6000))
    with pytest.raises(BadInput, match="more than 5000 resources"):
        api.described_paths(many.encode())


# ---------------------------------------------------------------- read-back

def test_certificates_in_json_and_pem_answers():
    root = make_ca(name((NameOID.COMMON_NAME, "Root")))
    leaf, _key = make_leaf(root, "exp1.example.com")
    as_json = json.dumps({"certificates": [{"pem": pem(root.cert).decode()},
                                           {"pem": pem(leaf).decode()}]}).encode()
    assert [fingerprint(c) for c in api.certificates_in(as_json, "application/json")] == [
        fingerprint(root.cert), fingerprint(leaf)]
    assert len(api.certificates_in(pem(leaf) + pem(root.cert), "text/plain")) == 2
    assert api.certificates_in(b'{"certificates": []}', "application/json") == []
    with pytest.raises(BadInput, match="not valid JSON"):
        api.certificates_in(b"{nope", "application/json")
    broken = json.dumps({"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n"
                                        "-----END CERTIFICATE-----\n"}).encode()
    with pytest.raises(BadInput, match="does not parse"):
        api.certificates_in(broken, "application/json")
    deep = b"[" * 100_000 + b"]" * 100_000  # deeper than Python's json goes
    with pytest.raises(BadInput, match="not valid JSON"):
        api.certificates_in(deep, "application/json")
    wide = b"[" + b"0," * 1_000_000 + b"0]"  # a million items: walked in linear time
    assert api.certificates_in(wide, "application/json") == []
    assert api.message_of(b"[" * 20_000) == "[" * 500 + "..."
    assert api.restart_required(b"[" * 20_000) is None and api.warnings_of(b"{" * 9999) == []


@pytest.mark.parametrize("body, said", [
    (b'{"Message": "The private key does not match the server certificate"}',
     "The private key does not match the server certificate"),
    (b'{"error": ["one", "two"]}', "one; two"),
    (b"<html><body><h1>403 Forbidden</h1></body></html>", "403 Forbidden"),
    (b"bad\x1b[31m red \x00 text", "bad [31m red text"),
    (b"x" * 5000, "x" * 500 + "..."),
    (b"", ""),
])
def test_the_nodes_own_words(body, said):
    assert api.message_of(body) == said


def test_restart_and_warnings_from_an_upload_answer():
    body = json.dumps({"Message": fx.MSG_UPLOADED, "restart_required": True,
                       "warnings": [fx.msg_large_rsa(8192)]}).encode()
    assert api.restart_required(body) is True
    assert api.warnings_of(body) == [fx.msg_large_rsa(8192)]
    assert api.restart_required(b'{"restart_required": false}') is False
    assert api.restart_required(b'{"Message": "ok"}') is None
    assert api.warnings_of(b"not json") == []


# ---------------------------------------------------------------- drift

def test_compare_names_every_difference():
    root = make_ca(name((NameOID.COMMON_NAME, "Root")))
    other = make_ca(name((NameOID.COMMON_NAME, "Other")))
    mine, _k = make_leaf(root, "exp1.example.com")
    theirs, _k = make_leaf(other, "exp1.example.com")
    assert api.compare(mine, [root.cert], mine, [root.cert], NOW) == []
    found = api.compare(mine, [root.cert], theirs, [other.cert], NOW)
    kinds = sorted(f.kind for f in found)
    assert kinds == ["extra-ca", "missing-ca", "server"]
    server = next(f for f in found if f.kind == "server")
    assert server.severity == "critical" and server.details["held"] == fingerprint(theirs)
    assert api.compare(mine, [], None, [], NOW)[0].text == \
        "the node reports no server certificate"
    late = NOW + (mine.not_valid_after_utc - NOW) - dt.timedelta(days=3)
    assert [f.kind for f in api.compare(mine, [], mine, [], late)] == ["server-expiry"]
    gone = mine.not_valid_after_utc + dt.timedelta(seconds=1)
    assert api.compare(mine, [], mine, [], gone)[0].severity == "critical"


def test_crl_fetch_recency():
    day = dt.timedelta(hours=26)
    assert api.crl_fetch_finding(None, None, NOW, NOW) is None  # not checked
    assert api.crl_fetch_finding(None, day, NOW, NOW - dt.timedelta(hours=2)) is None
    assert api.crl_fetch_finding(None, day, NOW, NOW - dt.timedelta(hours=30)).kind == \
        "crl-fetch"
    assert api.crl_fetch_finding(NOW - dt.timedelta(hours=25), day, NOW, NOW) is None
    stale = api.crl_fetch_finding(NOW - dt.timedelta(hours=27), day, NOW, NOW)
    assert "last fetched its CRL bundle at" in stale.text


# ---------------------------------------------------------------- sealed secrets

def test_a_sealed_password_opens_only_with_its_passphrase_and_node():
    box = sealed.seal(b"Expr3ss-way secret!", b"service passphrase", "node a")
    assert b"Expr3ss" not in box.encode() and "secret" not in box
    assert sealed.unseal(box, b"service passphrase", "node a") == b"Expr3ss-way secret!"
    with pytest.raises(WrongPassphrase):
        sealed.unseal(box, b"another passphrase", "node a")
    with pytest.raises(WrongPassphrase, match="another node"):
        sealed.unseal(box, b"service passphrase", "node b")
    assert sealed.seal(b"x", b"p", "c") != sealed.seal(b"x", b"p", "c")  # fresh salt, nonce
    for broken in ("", "{}", "not json", json.dumps({"alg": "rot13"}),
                   box.replace('"iter": ', '"iter": 9999999999')):
        with pytest.raises(BadInput):
            sealed.unseal(broken, b"service passphrase", "node a")
    with pytest.raises(BadInput):
        sealed.seal(b"", b"p", "c")
