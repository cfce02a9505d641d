"""``web.api.GrantCache``: the grants of checked tokens. Many requests that find a token's
grant expired make one look-up between them; a busy token is looked up again before its
grant expires, so its requests never wait; a look-up begun before a revocation is not
kept; a token revoked by another process stops within the cache's lifetime.

Through the real server and database. A look-up is made slow by holding the token's row
(SQLite: the writer lock) from another connection: the first use of a token writes its
``last_used_at``, which then waits."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import requests
from sqlalchemy import event, text

from service import tokens

from .conftest import make_csr
from .test_api import estate  # noqa: F401 - the fixture
from .test_api_shortcut import _shortcut


@pytest.fixture
def token_reads(app):
    """Look-ups of a token by its hash ("read") and writes of a token's row ("write") on the
    app's database (SQLAlchemy's own event)."""
    engine = app.sessions.kw["bind"]
    seen: list[str] = []

    def listener(_conn, _cursor, statement, *_args):
        flat = " ".join(statement.split()).lower()
        if flat.startswith("update api_tokens"):
            seen.append("write")
        elif "from api_tokens" in flat and "api_tokens.token_sha256 =" in flat:
            seen.append("read")

    event.listen(engine, "before_cursor_execute", listener)
    yield seen
    event.remove(engine, "before_cursor_execute", listener)


@contextlib.contextmanager
def _token_row_held(app, name: str):
    """The token's row locked by another connection until the block ends (on SQLite, the
    database's writer lock): its ``last_used_at`` cannot be written meanwhile."""
    engine = app.sessions.kw["bind"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET name = name WHERE name = :name"),
                     {"name": name})
        yield


def _all_at_once(count: int, send) -> list:
    answers: list = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait()
        answers[i] = send(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, answers


def _submit(api, token: str, cn: str) -> requests.Response:
    return requests.post(api.served.url("/api/v1/jobs"), timeout=60,
                         headers={"Authorization": f"Bearer {token}"},
                         json={"ca": "R", "csr": make_csr(cn, sans=(cn,)).decode()})


def test_a_herd_of_requests_looks_the_token_up_once(app, estate, token_reads):  # noqa: F811
    """Twelve requests with a token not yet checked arrive while its look-up is held up:
    one read and one ``last_used_at`` write between them, and every request answered."""
    api, _made = estate
    fresh = tokens.create_token(app, "herd", "requester", None)["token"]
    with _token_row_held(app, "herd"):
        token_reads.clear()
        threads, answers = _all_at_once(12, lambda _i: api.call("GET", "/cas", fresh))
        time.sleep(1.0)  # every request has arrived and waits for the one look-up
        assert all(answer is None for answer in answers)
    for thread in threads:
        thread.join()
    assert [answer.status_code for answer in answers] == [200] * 12
    assert token_reads.count("read") == 1, token_reads
    assert token_reads.count("write") == 1, token_reads


def test_a_bad_token_herd_is_refused_alike(app, estate, token_reads):  # noqa: F811
    """Requests sharing one look-up share its refusal too: each gets the 401 and its
    words, and the unknown token is not remembered as good."""
    api, _made = estate
    unknown = "pkiq_" + "A" * 43
    threads, answers = _all_at_once(8, lambda _i: api.call("GET", "/cas", unknown))
    for thread in threads:
        thread.join()
    assert {answer.status_code for answer in answers} == {401}
    assert {answer.json()["detail"] for answer in answers} == {"unknown API token"}
    assert api.call("GET", "/cas", unknown).status_code == 401


def test_a_busy_token_is_looked_up_again_before_its_grant_expires(app, estate,  # noqa: F811
                                                                  token_reads):
    """Submissions every 0.1 s for three lifetimes of a grant (1 s here): each one finds
    the grant cached (the shortcut takes them all), while the token is read again in the
    background about once a lifetime."""
    api, made = estate
    grants = _shortcut(api).api.state.grants
    grants.SECONDS, grants.AHEAD = 1.0, 0.6
    assert api.call("GET", "/cas", made["alice"]).status_code == 200  # checked: cached
    shortcut = _shortcut(api)
    before, reads_before = shortcut.taken, token_reads.count("read")
    ends = time.monotonic() + 3.0
    sent = 0
    while time.monotonic() < ends:
        assert _submit(api, made["alice"], f"busy{sent}.example.com").status_code == 201
        sent += 1
        time.sleep(0.1)
    assert shortcut.taken - before == sent  # none found the grant expired
    assert 2 <= token_reads.count("read") - reads_before <= 6, token_reads


def test_a_look_up_begun_before_a_revocation_is_not_kept(app, estate):  # noqa: F811
    """The grant a look-up brings back after this process forgot its tokens (what a
    revocation through the API does) answers the request that waited for it, but is not
    cached: the next request looks the token up again."""
    api, _made = estate
    grants = _shortcut(api).api.state.grants
    fresh = tokens.create_token(app, "late", "requester", None)["token"]
    with _token_row_held(app, "late"):
        threads, answers = _all_at_once(1, lambda _i: api.call("GET", "/cas", fresh))
        time.sleep(0.5)
        grants.forget_all()
    threads[0].join()
    assert answers[0].status_code == 200
    shortcut = _shortcut(api)
    before = shortcut.taken
    assert _submit(api, fresh, "late.example.com").status_code == 201
    assert shortcut.taken == before  # not cached: FastAPI's way, with a look-up


def test_a_token_revoked_elsewhere_stops_within_the_grants_lifetime(app, estate):  # noqa: F811
    """Revoked by another process (this one is not told): the background look-up of a busy
    token finds it revoked and drops the grant, and from then on every request is refused;
    no later than the lifetime of the grant last checked."""
    api, made = estate
    grants = _shortcut(api).api.state.grants
    grants.SECONDS, grants.AHEAD = 1.0, 0.6
    assert api.call("GET", "/cas", made["bob"]).status_code == 200
    tokens.revoke_token(app, "bob")
    revoked_at = time.monotonic()
    statuses = []
    while time.monotonic() < revoked_at + 2.5:
        statuses.append((time.monotonic() - revoked_at,
                         api.call("GET", "/cas", made["bob"]).status_code))
        time.sleep(0.05)
    first_refusal = next(i for i, (_t, status) in enumerate(statuses) if status == 401)
    assert statuses[first_refusal][0] <= 1.0 + 0.3  # the lifetime, and a request's time
    assert {status for _t, status in statuses[first_refusal:]} == {401}
    assert "revoked" in api.call("GET", "/cas", made["bob"]).json()["detail"]
