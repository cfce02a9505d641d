"""``web.api.SubmitBatcher`` and ``web.api.Announcements``: submissions that come close
together are written in one transaction, and jobs queued close together go to the workers
in one message of the embedded broker, whoever sent them; nothing is lost or told twice,
a full batch does not wait, and a refused request beside good ones is refused alone.

The windows are widened (0.3 s and more) so the tests decide on what pkiq does, not on how
fast this machine answers; the real server, database and broker are used throughout."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import requests
from sqlalchemy import event

from .conftest import make_csr
from .test_api import estate  # noqa: F401 - the fixture
from .test_api_shortcut import _shortcut


def _burst(api, token: str, bodies: list[dict]) -> list[requests.Response]:
    """All the submissions at once, one thread (and connection) each."""
    answers: list[requests.Response | None] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        start.wait()
        answers[i] = requests.post(api.served.url("/api/v1/jobs"), json=bodies[i], timeout=60,
                                   headers={"Authorization": f"Bearer {token}"})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _good(n: int, prefix: str) -> list[dict]:
    return [{"ca": "R", "csr": make_csr(f"{prefix}{i}.example.com",
                                        sans=(f"{prefix}{i}.example.com",)).decode()}
            for i in range(n)]


def _messages(app) -> list[list[int]]:
    """The job ids of each message waiting in the embedded broker."""
    found = []
    for path in sorted((app.settings.queue_dir / "messages").glob("*.msg")):
        payload = json.loads(path.read_bytes())
        body = payload["body"]
        if payload["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        found.append(list(args[0]))
    return found


def _wait_for_messages(app, count: int, timeout: float = 10) -> list[list[int]]:
    deadline = time.monotonic() + timeout
    while True:
        ids = sum(_messages(app), [])
        if len(ids) >= count or time.monotonic() > deadline:
            return _messages(app)
        time.sleep(0.05)


@pytest.fixture
def job_writes(app):
    """How many statements inserted signing jobs on the app's database (SQLAlchemy's own
    event): one per transaction that queued any."""
    engine = app.sessions.kw["bind"]
    counted = []

    def listener(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO SIGNING_JOBS"):
            counted.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    yield counted
    event.remove(engine, "before_cursor_execute", listener)


def _warm(api, token):
    """One read, so the token's grant is cached and the submissions take the short way."""
    assert api.call("GET", "/cas", token).status_code == 200


def test_a_burst_of_submissions_is_written_in_one_transaction_and_told_in_one_message(
        app, estate, job_writes):  # noqa: F811
    api, token = estate
    _warm(api, token["alice"])
    batcher = _shortcut(api).api.state.batcher
    batcher.GATHER = 0.5  # every request of the burst arrives well inside it
    started = time.monotonic()
    answers = _burst(api, token["alice"], _good(12, "burst"))
    assert [a.status_code for a in answers] == [201] * 12, [a.text for a in answers]
    assert time.monotonic() - started >= 0.5  # the first waited for the others
    ids = sorted(a.json()["id"] for a in answers)
    assert len(set(ids)) == 12
    assert len(job_writes) == 1  # one write for the lot
    assert _wait_for_messages(app, 12) == [ids]  # and one message, each job once


def test_jobs_written_apart_are_announced_together_once_each(app, estate):  # noqa: F811
    api, token = estate
    _warm(api, token["alice"])
    batcher = _shortcut(api).api.state.batcher
    batcher.GATHER = 0  # each request written as it comes: many writes
    batcher.announcements.GATHER = 1.0
    ids = []
    for i in range(3):  # three bursts, one after another: three writes at least
        answers = _burst(api, token["alice"], _good(5, f"apart{i}-"))
        assert [a.status_code for a in answers] == [201] * 5
        ids += [a.json()["id"] for a in answers]
    messages = _wait_for_messages(app, 15)
    told = sum(messages, [])
    assert sorted(told) == sorted(ids)  # every job, each once
    assert len(messages) < 3, messages  # fewer messages than writes


def test_full_batches_are_written_without_waiting(app, estate, job_writes):  # noqa: F811
    api, token = estate
    _warm(api, token["alice"])
    batcher = _shortcut(api).api.state.batcher
    batcher.GATHER, batcher.limit = 30.0, 4
    started = time.monotonic()
    answers = _burst(api, token["alice"], _good(8, "full"))
    assert [a.status_code for a in answers] == [201] * 8
    assert time.monotonic() - started < 20  # two full batches: neither waited the 30 s
    assert len(job_writes) == 2


def test_enough_waiting_submissions_are_written_at_once_in_one_write(
        app, estate, job_writes):  # noqa: F811
    api, token = estate
    _warm(api, token["alice"])
    batcher = _shortcut(api).api.state.batcher
    batcher.GATHER, batcher.ENOUGH = 30.0, 6  # the window would outlast the test
    started = time.monotonic()
    answers = _burst(api, token["alice"], _good(6, "enough"))
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert time.monotonic() - started < 20
    assert len(job_writes) == 1


def test_a_lone_submission_waits_the_window_and_no_longer(app, estate):  # noqa: F811
    api, token = estate
    _warm(api, token["alice"])
    batcher = _shortcut(api).api.state.batcher
    batcher.GATHER = 0.3
    for n in range(2):  # the second after the first's write: its own window, not less
        started = time.monotonic()
        [answer] = _burst(api, token["alice"], _good(1, f"lone{n}-"))
        waited = time.monotonic() - started
        assert answer.status_code == 201
        assert 0.3 <= waited < 10, waited


def test_a_refused_request_in_a_gathered_batch_is_refused_alone(app, estate):  # noqa: F811
    api, token = estate
    _warm(api, token["alice"])
    batcher = _shortcut(api).api.state.batcher
    batcher.GATHER = 0.5
    bodies = _good(6, "mixed")
    bodies[2] = {"ca": "R", "csr": "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n"
                 "-----END CERTIFICATE REQUEST-----\n"}
    bodies[4] = {"ca": "R", "csr": make_csr("bad name!.example.com").decode()}
    answers = _burst(api, token["alice"], bodies)
    codes = [a.status_code for a in answers]
    assert codes == [201, 201, 422, 201, 422, 201], [a.text for a in answers]
    assert "not a certificate request" in answers[2].json()["detail"]
    good = sorted(a.json()["id"] for a in answers if a.status_code == 201)
    assert sorted(sum(_wait_for_messages(app, 4), [])) == good


def test_a_job_after_a_quiet_spell_is_told_at_once_and_the_next_waits_for_the_window(
        app, estate):  # noqa: F811
    api, token = estate
    _warm(api, token["alice"])
    batcher = _shortcut(api).api.state.batcher
    batcher.GATHER = 0  # each request written as it comes
    batcher.announcements.GATHER = 4.0
    started = time.monotonic()
    [first] = _burst(api, token["alice"], _good(1, "quiet0-"))
    assert first.status_code == 201
    first_id = first.json()["id"]
    assert _wait_for_messages(app, 1, timeout=3) == [[first_id]]
    assert time.monotonic() - started < 3  # nothing was told before: no wait for the window
    [second, third] = [_burst(api, token["alice"], _good(1, f"quiet{n}-"))[0] for n in (1, 2)]
    assert second.status_code == third.status_code == 201
    time.sleep(1)
    assert _messages(app) == [[first_id]]  # inside the window: not yet, and not apart
    later = [second.json()["id"], third.json()["id"]]
    assert _wait_for_messages(app, 3, timeout=10) == [[first_id], later]
    assert time.monotonic() - started >= 4  # one message per window
