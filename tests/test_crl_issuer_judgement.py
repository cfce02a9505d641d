"""Issue 10 item 2: distribution points know the issuers they serve, and each issuer is
judged after a run over all of its points, with one alert per problem. Real HTTP servers on
127.0.0.1 serve the CRLs."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ca import crl_config, trust
from ca.models import CrlIssuerStatus, DistributionPoint
from scheduler import refresh, upkeep
from shell.db import transaction
from tests import crlfactory as cf

from . import httpd
from .httpd import Reply

http_server = httpd.http_server

A, B = "Judged CA A", "Judged CA B"


def run(sessions, clock):
    return refresh.refresh(sessions, clock, trigger="manual", sleep=lambda _s: None)


def world(sessions, clock, urls, issuers=(A, B)):
    with transaction(sessions) as s:
        for name in issuers:
            trust.add(s, cf.issuer(name).cert_pem, clock())
        crl_config.update_settings(s, clock(), timeout_seconds=2)
        crl_config.add_points(s, urls, clock())


def crl(name: str, number: int, at: dt.datetime, entries: int = 2) -> bytes:
    return cf.crl_der(entries, number=number, ca=cf.issuer(name), this_update=at)


def key(name: str) -> str:
    return trust.name_key(cf.issuer(name).cert.subject)


def two_points(sessions, clock, http_server, paths, number=1) -> tuple[str, str, bytes]:
    """Two points serving the same CRL of A (the same bytes: a re-signed copy would be a
    reused CRL number), one run done; their URLs and the CRL."""
    same = crl(A, number, cf.T0)
    for path in paths:
        http_server.route(path, same)
    urls = tuple(http_server.url(path) for path in paths)
    world(sessions, clock, list(urls), issuers=(A,))
    assert not run(sessions, clock).failed
    return (*urls, same)


def status(sessions, name) -> CrlIssuerStatus:
    with transaction(sessions) as s:
        return s.get(CrlIssuerStatus, key(name))


def alerts(sessions, clock) -> dict[str, str]:
    with transaction(sessions) as s:
        return {p.key.split(":")[0] + ":" + (p.details.get("url") or p.details.get("issuer")
                                             or ""): p.severity
                for p in upkeep.problems(s, clock(), dt.timedelta(hours=1))
                if not p.key.startswith("expiry")}


@pytest.fixture
def clock():
    from tests.conftest import FakeClock
    return FakeClock(cf.T0 + dt.timedelta(hours=1))


@pytest.mark.parametrize("other_point_fails", [False, True])
def test_a_point_that_starts_serving_another_issuer_is_a_problem(sessions, clock, http_server,
                                                                 other_point_fails):
    """The point of A suddenly serves B's genuine, newer CRL: B's CRL is installed (it is
    valid), but A counts as not refreshed with that reason, the run fails, and B is judged
    by its own point only, never refreshed 'from' A's point."""
    http_server.route("/a.crl", crl(A, 10, cf.T0))
    http_server.route("/b.crl", crl(B, 3, cf.T0))
    url_a, url_b = http_server.url("/a.crl"), http_server.url("/b.crl")
    world(sessions, clock, [url_a, url_b])
    assert not run(sessions, clock).failed
    clock.advance(hours=1)
    http_server.route("/a.crl", crl(B, 4, cf.T0 + dt.timedelta(minutes=30)))
    if other_point_fails:
        http_server.route("/b.crl", Reply(status=503))
    report = run(sessions, clock)
    failed = [p.url for p in report.failed]
    # B's own point serves #3: unchanged if it is applied first, else a copy older than the
    # #4 A's point brought (told on the point); results are applied as they arrive
    assert failed[0] == url_a and set(failed) <= {url_a, url_b}
    if other_point_fails:
        assert url_b in failed
    point_a = next(p for p in report.points if p.url == url_a)
    assert "instead of" in point_a.problem and B in point_a.problem
    assert A in status(sessions, A).error and "no longer serves" in status(sessions, A).error
    b = status(sessions, B)
    if other_point_fails:
        assert b.error and "503" in b.error and b.source == url_b
    else:
        assert b.error is None and b.source == url_b
    found = alerts(sessions, clock)
    assert found[f"issuer:/O=Example/CN={A}"] == "critical"
    assert f"dp:{url_a}" not in found  # told once, by A's alert


def test_an_issuer_is_refreshed_if_any_of_its_points_refreshed_it(sessions, clock,
                                                                  http_server):
    """Primary and mirror for one issuer: whichever fails, and in whichever order they run,
    the issuer stays refreshed; the failing point is a warning, not an issuer alert."""
    primary, mirror, same = two_points(sessions, clock, http_server,
                                       ("/primary.crl", "/mirror.crl"))
    paths = {primary: "/primary.crl", mirror: "/mirror.crl"}
    for failing, working in ((mirror, primary), (primary, mirror)):
        clock.advance(hours=1)
        http_server.route(paths[failing], Reply(status=500))
        http_server.route(paths[working], same)
        report = run(sessions, clock)
        assert [p.url for p in report.failed] == [failing]
        assert status(sessions, A).error is None
        assert alerts(sessions, clock) == {f"dp:{failing}": "warning"}


def test_an_issuer_not_refreshed_anywhere_carries_every_points_reason(sessions, clock,
                                                                      http_server):
    one, two, _crl = two_points(sessions, clock, http_server, ("/one.crl", "/two.crl"))
    clock.advance(hours=1)
    http_server.route("/one.crl", Reply(status=500))
    http_server.route("/two.crl", Reply(body=b"<html>maintenance</html>"))
    run(sessions, clock)
    error = status(sessions, A).error
    assert one in error and "500" in error and two in error
    # one alert, not three
    assert alerts(sessions, clock) == {f"issuer:/O=Example/CN={A}": "critical"}


def test_a_mirror_serving_an_older_copy_is_not_a_failure_of_the_issuer(sessions, clock,
                                                                       http_server):
    primary, mirror, _crl = two_points(sessions, clock, http_server,
                                       ("/primary.crl", "/mirror.crl"), number=5)
    clock.advance(hours=1)
    http_server.route("/primary.crl", crl(A, 6, cf.T0 + dt.timedelta(minutes=30)))
    # the mirror lags behind: it still serves #5, now older than what is installed
    run(sessions, clock)
    http_server.route("/mirror.crl", crl(A, 4, cf.T0 - dt.timedelta(hours=1)))
    clock.advance(hours=1)
    run(sessions, clock)
    assert status(sessions, A).error is None
    assert alerts(sessions, clock) == {f"dp:{mirror}": "warning"}


def test_a_cdp_point_knows_its_issuer_before_its_first_fetch(sessions, clock, http_server):
    """A point found in a trusted CA's CDP must serve the CRL of that certificate's issuer;
    serving another issuer's CRL at its first fetch is already a problem."""
    url = http_server.url("/cdp.crl")
    sub = cf.issuer(B)
    root = cf.issuer(A)
    # B's certificate names, in its CDP, the URL where A (its issuer) publishes A's CRL
    cert = (x509.CertificateBuilder().subject_name(sub.cert.subject)
            .issuer_name(root.cert.subject).public_key(sub.key.public_key())
            .serial_number(7).not_valid_before(cf.T0 - dt.timedelta(days=1))
            .not_valid_after(cf.T0 + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(url)], None, None, None)]), critical=False)
            .sign(root.key, hashes.SHA256()))
    with transaction(sessions) as s:
        trust.add(s, root.cert_pem + cert.public_bytes(serialization.Encoding.PEM), clock())
        crl_config.update_settings(s, clock(), timeout_seconds=2, use_cdp=True)
    http_server.route("/cdp.crl", crl(B, 1, cf.T0))  # B's own CRL: not what the CDP promised
    report = run(sessions, clock)
    [point] = report.points
    assert point.problem and A in point.problem
    assert "no longer serves" in status(sessions, A).error
    with transaction(sessions) as s:
        dp = s.query(DistributionPoint).filter_by(url=url).one()
        assert dp.serves == [[key(A), None]]
    http_server.route("/cdp.crl", crl(A, 1, cf.T0))
    clock.advance(hours=1)
    assert not run(sessions, clock).failed
    assert status(sessions, A).error is None


def test_a_point_learns_scopes_but_never_vouches_for_issuers_it_serves_besides(
        sessions, clock, http_server):
    """A point known for A (any scope, from an older pkiq) learns A's scope at its next
    success; a bundle that now also holds B's CRL installs it, but the point does not become
    one of B's points, so B is still judged by its own."""
    http_server.route("/a.crl", crl(A, 1, cf.T0))
    http_server.route("/b.crl", crl(B, 1, cf.T0))
    url_a, url_b = http_server.url("/a.crl"), http_server.url("/b.crl")
    world(sessions, clock, [url_a, url_b])
    with transaction(sessions) as s:
        s.query(DistributionPoint).filter_by(url=url_a).one().serves = [[key(A), None]]
    run(sessions, clock)
    with transaction(sessions) as s:
        [[issuer, scope]] = s.query(DistributionPoint).filter_by(url=url_a).one().serves
    assert issuer == key(A) and scope is not None
    clock.advance(hours=1)
    later = cf.T0 + dt.timedelta(minutes=30)
    http_server.route("/a.crl", cf.pem(crl(A, 2, later)) + cf.pem(crl(B, 2, later)))
    http_server.route("/b.crl", Reply(status=500))
    report = run(sessions, clock)
    assert not next(p for p in report.points if p.url == url_a).problem
    with transaction(sessions) as s:
        assert s.query(DistributionPoint).filter_by(url=url_a).one().serves == [[key(A), scope]]
    assert status(sessions, A).error is None
    assert "500" in status(sessions, B).error  # B's own point failed: B is not refreshed


def test_crl_status_says_how_each_issuer_was_judged(sessions, clock, http_server, pkiq):
    same = crl(A, 1, cf.T0)
    http_server.route("/one.crl", same)
    http_server.route("/two.crl", Reply(status=500))
    one, two = http_server.url("/one.crl"), http_server.url("/two.crl")
    world(sessions, clock, [one, two], issuers=(A, B))
    with transaction(sessions) as s:
        s.query(DistributionPoint).filter_by(url=two).one().serves = [[key(B), None]]
    run(sessions, clock)
    text = pkiq("crl", "status").output
    assert "judged after a run over all of its distribution points" in text
    assert f"refreshed from {one}" in text
    assert f"not refreshed by any of its distribution points: {two}" in text
    info = {r["issuer"]: r for r in json.loads(
        pkiq("crl", "status", "--json").output)["issuers"]}
    assert info[f"/O=Example/CN={A}"]["refreshed_from"] == one
    assert "500" in info[f"/O=Example/CN={B}"]["error"]
