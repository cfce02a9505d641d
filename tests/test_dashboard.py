"""The dashboard (/ui) in a real browser: Debian's headless Chromium driven by Selenium
against a real uvicorn server, over SQLite and PostgreSQL. An approver logs in with an API
token, approves a job, a worker signs it, the page shows it issued; a CRL near its nextUpdate
is flagged amber on the timeline and red once the clock passes it; a requester gets no
buttons and a forged approval is refused; a bad token, a form without its CSRF token and
bad parameters get clear 4xx pages, never a 500.

Nothing is downloaded at run time: the browser and the driver are the apt packages
``chromium`` and ``chromium-driver`` (.ci/run installs them) and Selenium Manager runs
offline. With PKIQ_SCREENSHOTS=DIR the main pages are saved there as PNG files (the README's
screenshots: PKIQ_SCREENSHOTS=docs/screenshots)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from service import cas, crl, stores, tokens, trust
from service import jobs as job_service

from . import crlfactory
from .conftest import PASSPHRASE, Cli, make_csr
from .test_api import sign_queued
from .test_web_downloads import Served

PASS = PASSPHRASE.encode()
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = os.environ.get("PKIQ_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} is missing: apt-get install chromium " \
                                    "chromium-driver (.ci/run does)"
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never fetch a browser or driver
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900", "--lang=en-GB",
                     "--force-device-scale-factor=1", "--disable-extensions",
                     "--no-first-run", "--disable-background-networking"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    if previous is None:
        os.environ.pop("SE_OFFLINE", None)
    else:
        os.environ["SE_OFFLINE"] = previous


def gone(element):
    """A wait condition: ``element`` belongs to a page the browser has left. Selenium's
    ``staleness_of`` knows only StaleElementReferenceException; ChromeDriver 156 also
    answers "Node with given id does not belong to the document" while the next page
    loads."""
    def check(_driver) -> bool:
        try:
            element.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one
            return True
        return False
    return check


class Dashboard:
    """The browser on one server, with helpers that wait for what they look for."""

    def __init__(self, driver, served: Served):
        self.driver, self.served = driver, served
        driver.delete_all_cookies()

    def url(self, path: str) -> str:
        return self.served.url("/ui" + path)

    def open(self, path: str):
        self.driver.get(self.url(path))
        return self

    def find(self, css: str):
        return WebDriverWait(self.driver, 15).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def all(self, css: str):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def login(self, token: str):
        self.open("/login")
        self.find("#token").send_keys(token)
        button = self.find("form[action$='/login'] button")
        button.click()
        WebDriverWait(self.driver, 15).until(gone(button))  # the next page
        return self

    def session(self) -> requests.Session:
        """A requests session holding the browser's cookies (they are HttpOnly: scripts
        cannot read them, the driver can)."""
        http = requests.Session()
        for cookie in self.driver.get_cookies():
            http.cookies.set(cookie["name"], cookie["value"], path=cookie["path"])
        return http

    def csrf(self) -> str:
        return self.find("form[action$='/logout'] input[name=csrf]").get_attribute("value")

    def shoot(self, name: str) -> None:
        if not SHOTS:
            return
        folder = Path(SHOTS)
        folder.mkdir(parents=True, exist_ok=True)
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}})
        (folder / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def estate(app, browser):
    """CAs Edge (manual approval), Root (automatic) and Short (a CRL valid 6 hours: inside
    the 48-hour warning margin); an external issuer's CRL uploaded; two nodes; tokens for
    an approver (carol) and a requester (alice)."""
    cas.create_ca(app, name="Root", subject="/C=GB/O=Example/CN=Example Root CA",
                  key_type="ec-p256", days=3650, passphrase=PASS)
    cas.create_ca(app, name="Edge", subject="/C=GB/O=Example/CN=Example Edge CA",
                  key_type="ec-p256", days=1825, passphrase=PASS,
                  changes=cas.CaChanges(approval="manual"))
    cas.create_ca(app, name="Short", subject="/C=GB/O=Example/CN=Example Lab CA",
                  key_type="ec-p256", days=365, passphrase=PASS,
                  changes=cas.CaChanges(crl_hours=6))
    for name in ("Root", "Edge", "Short"):
        cas.generate_crl(app, name, passphrase=PASS)
    partner = crlfactory.issuer("Partner Issuing CA")
    trust.add(app, partner.cert_pem)
    crl.upload(app, crlfactory.crl_der(4, ca=partner, this_update=app.clock() -
                                       dt.timedelta(days=2),
                                       next_update=app.clock() + dt.timedelta(days=12)),
               source="partner.crl")
    made = {name: tokens.create_token(app, name, role, None)["token"]
            for name, role in [("carol", "approver"), ("alice", "requester"),
                               ("bob", "requester")]}
    served = Served(app)
    yield Dashboard(browser, served), made
    served.close()


def submit(app, ca: str, cn: str, requester: str) -> int:
    rows, _ = job_service.queue_requests(app, ca, [make_csr(cn)], profile="webclientandserver",
                                         requester=requester)
    return rows[0]["id"]


def test_an_approver_approves_a_job_and_sees_it_issued(app, estate):
    ui, token = estate
    done = submit(app, "Root", "intranet.example.com", "alice")
    sign_queued(app)
    refused = submit(app, "Edge", "old.example.com", "bob")
    job_service.reject(app, [refused], by="carol", reason="duplicate of job 1")
    waiting = submit(app, "Edge", "expe1.example.com", "alice")
    submit(app, "Edge", "expe2.example.com", "alice")

    ui.login(token["carol"])
    row = ui.find(f"#job-{waiting}")
    assert row.get_attribute("data-state") == "awaiting_approval"
    assert ui.find(".who").text.startswith("carol approver")
    assert ui.find(f"#job-{done}").get_attribute("data-state") == "issued"
    ui.shoot("jobs")

    row.find_element(By.CSS_SELECTOR, "button.approve").click()
    assert ui.find("#notice").text == f"Job {waiting} approved."
    row = ui.find(f"#job-{waiting}")
    assert row.get_attribute("data-state") == "queued"
    assert "carol" in row.text  # decided by
    assert job_service.show_job(app, waiting)["decided_by"] == "carol"
    entry = tokens.audit_entries(app, action="job.approve")[0]
    assert entry["actor"] == "carol" and entry["via"] == "web"

    sign_queued(app)  # what a worker does with it
    ui.driver.refresh()
    row = ui.find(f"#job-{waiting}")
    assert row.get_attribute("data-state") == "issued"
    serial = job_service.show_job(app, waiting)["serial"]
    assert serial and serial in row.text

    # the filters narrow the list; an unknown state is a 400 page, an unknown CA a 404
    ui.open("/jobs?state=issued")
    assert {r.get_attribute("data-state") for r in ui.all("#jobs tbody tr")} == {"issued"}
    ui.open("/jobs?state=exploded")
    assert "state 'exploded'" in ui.find("#error-message").text
    ui.open("/jobs?ca=Nowhere")
    assert ui.find("#error-message").text == "no CA 'Nowhere'"

    ui.open("/cas")
    assert "Example Edge CA" in ui.find("#ca-Edge").text
    ui.shoot("cas")


def test_the_crl_timeline_flags_a_crl_near_and_past_its_next_update(app, clock, estate):
    ui, token = estate
    ui.login(token["carol"])
    ui.open("/crls")
    rows = {r.find_element(By.CSS_SELECTOR, ".name").text: r
            for r in ui.all("#timeline tbody tr")}
    assert set(rows) == {"/C=GB/O=Example/CN=Example Root CA",
                         "/C=GB/O=Example/CN=Example Edge CA",
                         "/C=GB/O=Example/CN=Example Lab CA", "/O=Example/CN=Partner Issuing CA"}
    states = {name: r.get_attribute("data-state") for name, r in rows.items()}
    lab = next(name for name in states if "Lab CA" in name)
    assert states[lab] == "near"
    assert [s for n, s in states.items() if n != lab] == ["ok"] * 3
    assert "6 h left" in rows[lab].text and "due soon" in rows[lab].text
    assert "1 CRL needs attention" in ui.find("#flagged").text
    schedule = ui.find("#schedule").text
    assert "Nightly refresh: daily at 02:00 UTC" in schedule and "next at 2026-11-28" in \
        schedule
    assert ui.all("#timeline tbody tr svg rect.validity.near")
    ui.shoot("crl-timeline")

    clock.advance(hours=7)  # past the Lab CA's nextUpdate: red
    ui.driver.refresh()
    row = next(r for r in ui.all("#timeline tbody tr") if "Lab CA" in r.text)
    assert row.get_attribute("data-state") == "expired"
    assert "expired 1 h ago" in row.text
    assert ui.all("#timeline tbody tr svg rect.validity.expired")


def test_nodes_show_coverage_gaps_and_publish_state(app, clock, estate):
    ui, token = estate
    pkiq = Cli(app)
    assert pkiq("cluster", "add", "edge", "--fqdn", "vcse.example.com").exit_code == 0
    for peer in ("expe1", "expe2"):
        assert pkiq("node", "add", f"{peer}.example.com", "--role", "E", "--cluster", "edge",
                    "--uc-domain", "example.com").exit_code == 0
    stores.publish(app, "expe1.example.com", passphrase=PASS)
    ui.login(token["carol"])
    ui.open("/nodes")
    row = ui.find("#node-expe1\\.example\\.com")
    assert "gap" in row.text and "expiring" in row.text  # the Lab CA's 6-hour CRL
    checked = {c["node"]: c for c in stores.check(app)}
    assert len(ui.all("#nodes tbody tr")) == len(checked) == 2
    assert "No REST rollouts yet" in ui.find("main").text
    ui.shoot("nodes")


def test_a_requester_sees_only_its_jobs_and_cannot_approve(app, estate):
    ui, token = estate
    own = submit(app, "Edge", "mine.example.com", "alice")
    other = submit(app, "Edge", "theirs.example.com", "bob")
    ui.login(token["alice"])
    ids = [r.get_attribute("id") for r in ui.all("#jobs tbody tr")]
    assert ids == [f"job-{own}"]
    assert not ui.all("button.approve") and not ui.all("button.reject")
    assert "As a requester" in ui.find("main").text

    # a forged approval with the session's own CSRF token: 403, nothing changed
    http = ui.session()
    forged = http.post(ui.url(f"/jobs/{own}/approve"), data={"csrf": ui.csrf()},
                       allow_redirects=False)
    assert forged.status_code == 403
    assert "needs the approver role" in forged.text
    assert job_service.show_job(app, own)["state"] == "awaiting_approval"
    # and in the browser itself, a form built by hand
    ui.driver.execute_script(
        "const f = document.createElement('form'); f.method = 'post';"
        "f.action = arguments[0]; const i = document.createElement('input');"
        "i.name = 'csrf'; i.value = arguments[1]; f.appendChild(i);"
        "document.body.appendChild(f); f.submit();", ui.url(f"/jobs/{other}/approve"),
        ui.csrf())
    assert "needs the approver role" in ui.find("#error-message").text
    assert job_service.show_job(app, other)["state"] == "awaiting_approval"
    ui.open("/nodes")
    assert "needs the approver role" in ui.find("#error-message").text

    # a revoked token ends the session at its next page
    tokens.revoke_token(app, "alice")
    ui.open("/jobs")
    ui.find("#token")
    assert ui.driver.current_url.endswith("/ui/login")


def test_login_errors_csrf_and_logout(app, estate):
    ui, token = estate
    job = submit(app, "Edge", "csrf.example.com", "alice")
    ui.open("/jobs")  # not logged in: the login page
    ui.find("#token")
    ui.login("pkiq_" + "x" * 43)
    assert ui.find("#login-error").text == "unknown API token"
    ui.login("not a token")
    assert "not a pkiq API token" in ui.find("#login-error").text
    assert not [c for c in ui.driver.get_cookies() if c["name"] == "pkiq_ui"]
    ui.login(token["carol"])
    ui.find(f"#job-{job}")
    cookie = next(c for c in ui.driver.get_cookies() if c["name"] == "pkiq_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain HTTP here; over HTTPS the cookie is Secure

    http = ui.session()
    for data in ({"reason": "x"}, {"csrf": "0" * 40}, {"csrf": ""}):
        refused = http.post(ui.url(f"/jobs/{job}/approve"), data=data, allow_redirects=False)
        assert refused.status_code == 403 and "CSRF token is missing or wrong" in refused.text
    assert job_service.show_job(app, job)["state"] == "awaiting_approval"
    # the login form has its own (double-submit) token
    bare = requests.post(ui.url("/login"), data={"token": token["carol"]},
                         allow_redirects=False)
    assert bare.status_code == 403 and "pkiq_ui" not in bare.cookies

    ui.open("/jobs")
    ui.find("form[action$='/logout'] button").click()
    ui.find("#token")
    assert not [c for c in ui.driver.get_cookies() if c["name"] == "pkiq_ui"]
    ui.open("/crls")
    assert ui.driver.current_url.endswith("/ui/login")


def test_bad_requests_get_a_4xx_page_never_a_500(app, estate):
    ui, token = estate
    job = submit(app, "Edge", "bad.example.com", "alice")
    ui.login(token["carol"])
    http = ui.session()
    csrf = ui.csrf()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases = [
        ("GET", "/jobs?state=" + "x" * 100, None, None, 400),
        ("GET", "/jobs?ca=%C3%A9t%C3%A9", None, None, 404),
        ("GET", "/jobs/1/approve", None, None, 405),
        ("GET", "/no/such/page", None, None, 404),
        ("GET", "/static/../dashboard.py", None, None, 404),
        ("POST", f"/jobs/{job}/explode", {"csrf": csrf}, None, 404),
        ("POST", "/jobs/99999999999/approve", {"csrf": csrf}, None, 404),
        ("POST", "/jobs/12345/approve", {"csrf": csrf}, None, 404),
        ("POST", f"/jobs/{job}/approve", "csrf=" + csrf, {"Content-Type": "text/plain"}, 415),
        ("POST", f"/jobs/{job}/approve", b"csrf=\xff\xfe", form, 400),
        ("POST", f"/jobs/{job}/approve", "&".join(f"a{i}=1" for i in range(50)), form, 400),
        ("POST", f"/jobs/{job}/approve", "csrf=" + "a" * 70000, form, 413),
        ("POST", "/login", {"csrf": "x", "token": "y"}, None, 403),
    ]
    for method, path, data, headers, status in cases:
        answer = http.request(method, ui.url(path), data=data, headers=headers,
                              allow_redirects=False, timeout=30)
        assert answer.status_code == status, (method, path, answer.status_code, answer.text)
    assert job_service.show_job(app, job)["state"] == "awaiting_approval"
    approved = http.post(ui.url(f"/jobs/{job}/approve"), data={"csrf": csrf},
                         allow_redirects=False)
    assert approved.status_code == 303
    again = http.post(ui.url(f"/jobs/{job}/approve"), data={"csrf": csrf},
                      allow_redirects=False)
    assert again.status_code == 409 and re.search(r"awaiting|approv", again.text)
    page = http.get(ui.url("/crls"))
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
