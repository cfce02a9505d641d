"""The dashboard's "Check a certificate" page (/ui/verify) in a real browser, as
tests/test_dashboard.py drives the other pages (Debian's Chromium, a real uvicorn server,
SQLite and PostgreSQL): a leaf of pkiq's Root checked for a node trusting Root is valid with
one line per certificate; a revoked one is invalid and says why; a DER file uploaded answers
as the pasted PEM does; garbage, nothing, too much, an unknown node and a requester asking
for OCSP get a message on the page and a 4xx, and nothing is written.

With PKIQ_SCREENSHOTS=DIR the page is saved with each verdict as DIR/verify.png and
DIR/verify-revoked.png (the README's: PKIQ_SCREENSHOTS=docs/screenshots)."""

from __future__ import annotations

import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from service import tokens

from .conftest import make_csr
from .test_dashboard import Dashboard, browser, gone  # noqa: F401 (browser: a fixture)
from .test_nodes import make_estate, ok
from .test_web_downloads import Served

NODE = "expe1.example.com"


@pytest.fixture
def estate(app, pkiq, clock, browser, tmp_path):  # noqa: F811 (the imported fixture)
    """Root with two leaves (one revoked for keyCompromise and on the CRL), nodes expe1 and
    expe2 trusting Root, tokens for an approver (carol) and a requester (alice)."""
    make_estate(pkiq)
    ok(pkiq("ca", "gencrl", "Root"))
    leaves = {}
    for cn in ("peer", "stolen"):
        csr = tmp_path / f"{cn}.csr"
        csr.write_bytes(make_csr(f"{cn}.example.com", sans=(f"{cn}.example.com",)))
        out = tmp_path / f"{cn}.pem"
        issued = json.loads(ok(pkiq("ca", "sign", "Root", csr, "--out", out, "--json")).stdout)
        leaves[cn] = (out, issued["serial"])
    clock.advance(minutes=5)
    ok(pkiq("ca", "revoke", "Root", leaves["stolen"][1], "--reason", "keyCompromise"))
    clock.advance(minutes=5)
    ok(pkiq("ca", "gencrl", "Root"))
    made = {name: tokens.create_token(app, name, role, None)["token"]
            for name, role in [("carol", "approver"), ("alice", "requester")]}
    served = Served(app)
    yield Dashboard(browser, served), made, {k: v[0] for k, v in leaves.items()}
    served.close()


def check(ui: Dashboard, pem: str = "", *, upload=None, host: str | None = None,
          purpose: str | None = None, node: str = NODE):
    """Fill in the form as a person would and wait for the next page."""
    ui.open("/verify")
    Select(ui.find("#node")).select_by_visible_text(node)
    if pem:  # send_keys types each character: set the value as a paste would
        ui.driver.execute_script("arguments[0].value = arguments[1]", ui.find("#certificate"),
                                 pem)
    if upload is not None:
        ui.find("#file").send_keys(str(upload))
    if host:
        ui.find("#host").send_keys(host)
    if purpose:
        Select(ui.find("#purpose")).select_by_value(purpose)
    button = ui.find("#check")
    button.click()
    WebDriverWait(ui.driver, 30).until(gone(button))
    return ui


def path_lines(ui: Dashboard) -> list[tuple[str, str]]:
    return [(row.get_attribute("data-state"),
             row.find_element(By.CSS_SELECTOR, ".detail").text)
            for row in ui.all("#path tbody tr")]


def test_a_valid_leaf_then_a_revoked_one_then_garbage(app, estate, tmp_path):
    ui, token, leaf = estate
    ui.login(token["carol"])
    ui.find("nav a[href$='/ui/verify']").click()
    assert ui.find("h1").text == "Check a certificate"
    assert [o.text for o in Select(ui.find("#node")).options] == [NODE, "expe2.example.com"]
    assert ui.find("input[name=use_ocsp]").is_selected()  # Expressway's defaults
    audit = len(tokens.audit_entries(app, limit=1000))

    check(ui, leaf["peer"].read_text(), host="peer.example.com", purpose="serverAuth")
    assert ui.find("#verdict").get_attribute("data-result") == "valid"
    assert ui.find("#result").text.lower() == "valid"
    lines = path_lines(ui)
    assert [state for state, _ in lines] == ["ok", "ok"]
    assert all(detail for _, detail in lines)  # each certificate says why it is good
    assert "end-entity" in ui.find("#path-0").text and "trust anchor" in \
        ui.find("#path-1").text
    assert "Example Root" in ui.find("#path-1 .subject").text
    assert f"node {NODE}" in ui.find("#verdict").text
    ui.shoot("verify")

    check(ui, leaf["stolen"].read_text())
    assert ui.find("#verdict").get_attribute("data-result") == "invalid"
    state, detail = path_lines(ui)[0]
    assert state == "revoked" and "keyCompromise" in detail, detail
    ui.shoot("verify-revoked")

    # the same revoked leaf as a DER file, uploaded: the same answer
    der = tmp_path / "stolen.der"
    der.write_bytes(x509.load_pem_x509_certificate(leaf["stolen"].read_bytes())
                    .public_bytes(Encoding.DER))
    check(ui, upload=der)
    assert ui.find("#verdict").get_attribute("data-result") == "invalid"
    assert "keyCompromise" in path_lines(ui)[0][1]

    check(ui, "this is not a certificate")
    assert "certificate" in ui.find("#verify-error").text
    assert not ui.all("#verdict")
    assert ui.find("#certificate").get_attribute("value") == "this is not a certificate"
    assert len(tokens.audit_entries(app, limit=1000)) == audit  # a check writes nothing


def test_bad_input_gets_a_message_and_a_4xx(app, estate, tmp_path):
    ui, token, leaf = estate
    ui.login(token["carol"])
    http = ui.session()
    ui.open("/verify")
    csrf = ui.csrf()
    pem = leaf["peer"].read_text()
    base = {"csrf": csrf, "node": NODE, "use_crls": "on"}
    cases = [
        ({**base, "certificate": "garbage"}, None, 400, "certificate"),
        ({**base, "certificate": ""}, None, 400, "paste a certificate"),
        ({**base, "certificate": pem, "node": "nope.example.com"}, None, 404, "no node"),
        ({**base, "certificate": pem, "purpose": "codeSigning"}, None, 400, "purpose"),
        ({**base, "certificate": pem}, {"file": ("x.pem", pem)}, 400, "not both"),
        ({**base, "certificate": "A" * 300_000}, None, 400, "256 KiB"),
        ({**base, "certificate": "A" * 600_000}, None, 413, "over 528 KiB"),
        ({**base, "certificate": "A" * 1_200_000}, None, 413, "over 1,048,576 bytes"),
        ({**base, "certificate": pem, "extra": "1"}, None, 400, "unexpected field"),
        ({"node": NODE, "certificate": pem}, None, 403, "CSRF"),
    ]
    for data, files, status, fragment in cases:
        answer = http.post(ui.url("/verify"), data=data, files=files, timeout=60)
        assert answer.status_code == status, (data.get("node"), answer.status_code)
        assert fragment in answer.text, (status, fragment)
        assert 'id="verdict"' not in answer.text
    # multipart with a garbage file: the same message as pasted garbage, on the page
    answer = http.post(ui.url("/verify"), data=base, files={"file": ("x.der", b"\x30\x03ab")},
                       timeout=60)
    assert answer.status_code == 400 and 'id="verify-error"' in answer.text
    plain = http.post(ui.url("/verify"), data="x", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    good = http.post(ui.url("/verify"), data={**base, "certificate": pem}, timeout=60)
    assert good.status_code == 200 and 'data-result="valid"' in good.text


def test_a_requester_checks_without_network_fetches(app, estate):
    ui, token, leaf = estate
    ui.login(token["alice"])
    ui.open("/verify")
    assert not ui.find("input[name=use_ocsp]").is_enabled()
    assert not ui.find("input[name=cdp_downloads]").is_enabled()
    assert "approver or admin" in ui.find("#network-hint").text
    check(ui, leaf["stolen"].read_text())
    assert ui.find("#verdict").get_attribute("data-result") == "invalid"
    assert "OCSP off" in ui.find("#verdict").text

    http = ui.session()
    forged = http.post(ui.url("/verify"), data={
        "csrf": ui.csrf(), "node": NODE, "certificate": leaf["peer"].read_text(),
        "use_ocsp": "on"}, timeout=60)
    assert forged.status_code == 403 and "approver or admin" in forged.text
