"""One rule for what a CRL distribution point is (``ca.crl_config.check_url``), the same
where a point is added and where a fetch follows a redirect: the class of URLs below is
tried at both places."""

from __future__ import annotations

import pytest

from ca import crl_config
from ca.errors import BadInput
from scheduler.fetch import FetchLimits, Validator, fetch_all
from shell.db import transaction

from . import httpd
from .httpd import redirect

http_server = httpd.http_server
FAST = FetchLimits(connect_timeout=1.0, read_timeout=0.3, total_timeout=1.0, retries=0)

# (URL, what the refusal says); both places must refuse each one. ``{host}`` is a host that
# the redirect test's server also answers on, so a followed redirect would be seen.
REFUSED = [
    ("http://user:pw@{host}/a.crl", "user name or password"),
    ("HTTP://admin:hunter2@{host}/a.crl", "user name or password"),
    ("ldap://{host}/cn=CA?certificateRevocationList", "only HTTP(S) distribution points"),
    ("file:///etc/passwd", "only HTTP(S) distribution points"),
    ("https:///nohost.crl", "has no host"),
    ("http://{host}/a b.crl", "must not contain spaces or control characters"),
    ("http://{host}/a\tb.crl", "must not contain spaces or control characters"),
    ("http://{host}/" + "a" * 2048, "longer than 2048 characters"),
    ("http://127.0.0.1:99999/a.crl", "Port out of range"),
]
SECRETS = ("pw@", "hunter2", "admin:", "user:")


def _no_secret(message: str) -> None:
    assert not any(secret in message for secret in SECRETS), message


@pytest.mark.parametrize(("url", "words"), [
    *REFUSED, ("http://{host}/a\n.crl", "must not contain spaces or control characters")])
def test_refused_when_added(sessions, clock, url, words):
    with pytest.raises(BadInput) as caught, transaction(sessions) as s:
        crl_config.add_points(s, ["http://ok.example.com/a.crl",
                                  url.format(host="crl.example.com")], clock())
    assert words in str(caught.value)
    _no_secret(str(caught.value))
    with transaction(sessions) as s:
        assert crl_config.list_points(s) == []  # the good one was not added either


def test_the_scheme_in_any_case_is_accepted_when_added(sessions, clock):
    with transaction(sessions) as s:
        added = crl_config.add_points(s, [" HTTP://X/a.crl ", "Https://crl.example.com"],
                                      clock())
        assert [p.url for p in added] == ["HTTP://X/a.crl", "Https://crl.example.com"]


@pytest.mark.parametrize(("url", "words"), REFUSED)
def test_refused_as_a_redirect_target(http_server, url, words):
    target = url.format(host=f"127.0.0.1:{http_server.port}")
    http_server.route("/start", redirect(target))
    http_server.route("/a.crl", b"not to be fetched")
    [result] = fetch_all([(http_server.url("/start"), Validator())], limits=FAST)
    assert result.outcome == "error"
    assert result.error.startswith(f"{http_server.url('/start')} redirects to a URL that is "
                                   "not followed: "), result.error
    assert words in result.error
    _no_secret(result.error)
    assert http_server.paths() == ["/start"]


def test_the_scheme_in_any_case_is_followed_as_a_redirect(http_server):
    http_server.route("/start", redirect(f"HTTP://127.0.0.1:{http_server.port}/a.crl#x"))
    http_server.route("/a.crl", b"crl")
    [result] = fetch_all([(http_server.url("/start"), Validator())], limits=FAST)
    assert (result.outcome, result.body) == ("fetched", b"crl")
    assert result.final_url == http_server.url("/a.crl")


@pytest.mark.parametrize(("url", "words"), REFUSED)
def test_refused_when_fetched_directly(url, words):
    """``fetch_all`` given such a URL (none can be stored) sends no request."""
    [result] = fetch_all([(url.format(host="127.0.0.1:9"), Validator())], limits=FAST)
    assert result.outcome == "error" and words in result.error
    _no_secret(result.error)
    _no_secret(result.final_url)


@pytest.mark.parametrize(("url", "expected"), [
    ("ldap://ldap.example.com/cn=CA?certificateRevocationList",
     "only HTTP(S) distribution points are supported (the Expressway guide); "
     "'ldap://ldap.example.com/cn=CA?certificateRevocationList' is ldap:"),
    ("ftp://ftp.example.com/a.crl", "only HTTP(S) distribution points are supported"),
    ("crl.example.com/a.crl", "only HTTP(S) distribution points are supported (the Expressway "
                              "guide); 'crl.example.com/a.crl' is not a URL"),
    ("http:///a.crl", "'http:///a.crl' has no host"),
    ("http://[::1/a.crl", "'http://[::1/a.crl': Invalid IPv6 URL"),
    ("http://crl.example.com:99999/a.crl", "'http://crl.example.com:99999/a.crl': Port out of "),
    ("http://crl.example.com/a b.crl", "'http://crl.example.com/a b.crl': a distribution point"
                                       " URL must not contain spaces"),
    ("http://crl.example.com/\x7f.crl", "'http://crl.example.com/\\x7f.crl': a distribution "
                                        "point URL must not contain spaces"),
    ("ldap://admin:hunter2@ldap.example.com/", "only HTTP(S) distribution points are supported "
                                               "(the Expressway guide); 'ldap://***@ldap"),
    ("https://a:hunter2@crl.example.com/a.crl", "'https://***@crl.example.com/a.crl': "
                                                "distribution point URLs with a user name"),
])
def test_one_clear_sentence(url, expected):
    with pytest.raises(BadInput) as caught:
        crl_config.check_url(url)
    assert str(caught.value).startswith(expected), caught.value
    assert "hunter2" not in str(caught.value)
