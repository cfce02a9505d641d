"""``web.api.SubmitShortcut``: a submission from a recently checked token skips FastAPI's
layers. Every request here is sent once through FastAPI (the token's grant not cached) and
once the short way (cached), and the two answers must be the same: status, and the error's
words or the job's fields. Tricky JSON (strings for numbers, booleans, duplicate keys, lone
surrogates, huge numbers), wrong content types, over-long keys, refused and forbidden
requests: the shortcut takes what it can take whole and hands the rest to FastAPI."""

from __future__ import annotations

import json

import pytest
import requests
from starlette.routing import Mount

from service import tokens
from web.app import FrontDoor

from .conftest import make_csr
from .test_api import estate  # noqa: F401 - the fixture

JOB_FIELDS = ("ca", "profile", "state", "requester", "node", "days", "attempts", "error",
              "new")


def _shortcut(api):
    front = api.served.server.config.app  # FrontDoor: POST /api/v1/jobs goes to .api
    assert isinstance(front, FrontDoor)
    [mount] = [r for r in front.app.routes if isinstance(r, Mount) and r.path == "/api/v1"]
    assert mount.app is front.api  # the one the outer app mounts too
    return front.api.app  # BodyLimit -> SubmitShortcut


def _send(api, token: str, body: bytes, headers: dict, *, short: bool):
    shortcut = _shortcut(api)
    grants = shortcut.api.state.grants
    if short:  # a read first: the token's grant is then cached
        assert api.call("GET", "/cas", token).status_code == 200
    else:
        grants.forget_all()
    before = shortcut.taken
    answer = requests.post(api.served.url("/api/v1/jobs"), data=body, timeout=60,
                           headers={"Authorization": f"Bearer {token}", **headers})
    return answer, shortcut.taken - before


def _view(answer: requests.Response):
    try:
        body = answer.json()
    except ValueError:
        return answer.status_code, answer.text
    if answer.status_code == 201:
        return 201, {k: body.get(k) for k in JOB_FIELDS}
    return answer.status_code, body


def _pem(cn: str) -> str:
    return make_csr(cn, sans=(cn,)).decode()


JSON = {"Content-Type": "application/json"}

# (label, body maker (a fresh CSR per call, so a new job each time), headers, taken short?)
CASES = [
    ("valid", lambda cn: {"ca": "R", "csr": _pem(cn)}, JSON, True),
    ("profile and days", lambda cn: {"ca": "R", "csr": _pem(cn), "profile": "webserver",
                                     "days": 30}, JSON, True),
    ("days as a string", lambda cn: {"ca": "R", "csr": _pem(cn), "days": "30"}, JSON, True),
    ("days as a float", lambda cn: {"ca": "R", "csr": _pem(cn), "days": 30.0}, JSON, True),
    ("days as a boolean", lambda cn: {"ca": "R", "csr": _pem(cn), "days": True}, JSON, True),
    ("days zero", lambda cn: {"ca": "R", "csr": _pem(cn), "days": 0}, JSON, True),
    ("a huge number", lambda cn: f'{{"ca": "R", "csr": {json.dumps(_pem(cn))}, '
     '"days": 1e400}', JSON, True),
    ("charset given", lambda cn: {"ca": "R", "csr": _pem(cn)},
     {"Content-Type": "Application/JSON; charset=utf-8"}, True),
    ("an unknown field", lambda cn: {"ca": "R", "csr": _pem(cn), "extra": 1}, JSON, True),
    ("duplicate keys", lambda cn: f'{{"ca": "nope", "ca": "R", "csr": '
     f'{json.dumps(_pem(cn))}}}', JSON, True),
    ("a lone surrogate", lambda cn: '{"ca": "R", "csr": "\\ud800abc"}', JSON, True),
    ("a NUL in the request", lambda cn: {"ca": "R", "csr": "abc\u0000def"}, JSON, True),
    ("not JSON", lambda cn: b"{not json", JSON, True),
    ("a JSON array", lambda cn: [1, 2], JSON, True),
    ("an empty body", lambda cn: b"", JSON, True),
    ("an unknown CA", lambda cn: {"ca": "Nope", "csr": _pem(cn)}, JSON, True),
    ("a CA the token may not use", lambda cn: {"ca": "M", "csr": _pem(cn)}, JSON, True),
    ("garbage for a CSR", lambda cn: {"ca": "R", "csr": "-----BEGIN CERTIFICATE REQUEST-----"
                                      "\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, JSON, True),
    ("an unknown profile", lambda cn: {"ca": "R", "csr": _pem(cn), "profile": "x"}, JSON, True),
    ("a node that does not exist", lambda cn: {"ca": "R", "csr": _pem(cn), "node": "n.x"},
     JSON, True),
    ("text/plain", lambda cn: {"ca": "R", "csr": _pem(cn)}, {"Content-Type": "text/plain"},
     False),
    ("no content type", lambda cn: {"ca": "R", "csr": _pem(cn)}, {}, False),
    ("an over-long Idempotency-Key", lambda cn: {"ca": "R", "csr": _pem(cn)},
     {**JSON, "Idempotency-Key": "k" * 256}, False),
]


@pytest.fixture
def limited(app, estate):  # noqa: F811 - the fixture imported above
    """Estate plus a requester limited to CA R."""
    api, made = estate
    made = {**made, "erin": tokens.create_token(app, "erin", "requester", ["R"])["token"]}
    return api, made


@pytest.mark.parametrize("label, make, headers, short", CASES, ids=[c[0] for c in CASES])
def test_the_shortcut_answers_as_fastapi_does(limited, label, make, headers, short):
    api, token = limited
    answers = []
    for way in ("fastapi", "short"):
        body = make(f"{way}-{abs(hash(label)) % 10**8}.example.com")
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        answer, taken = _send(api, token["erin"], data, headers, short=way == "short")
        assert taken == (1 if way == "short" and short else 0), (label, way)
        assert answer.status_code < 500, (label, way, answer.text)
        answers.append(_view(answer))
    assert answers[0] == answers[1], label


def test_idempotency_keys_hold_across_the_two_ways(limited):
    """A key first used through FastAPI answers the same the short way, and refuses another
    body the same way too."""
    api, token = limited
    pem = _pem("idem.example.com")
    key = {**JSON, "Idempotency-Key": "deploy-42"}
    first, _ = _send(api, token["erin"], json.dumps({"ca": "R", "csr": pem}).encode(), key,
                     short=False)
    again, taken = _send(api, token["erin"], json.dumps({"ca": "R", "csr": pem}).encode(), key,
                         short=True)
    assert taken == 1 and first.status_code == again.status_code == 201
    assert again.json() == first.json()
    other = json.dumps({"ca": "R", "csr": _pem("other.example.com")}).encode()
    clash_fastapi, _ = _send(api, token["erin"], other, key, short=False)
    clash_short, taken = _send(api, token["erin"], other, key, short=True)
    assert taken == 1 and clash_fastapi.status_code == clash_short.status_code == 400
    assert clash_fastapi.json() == clash_short.json()


def test_a_revoked_token_stops_at_once_on_the_short_way_too(app, limited):
    """A revocation made through the API clears this process's cached grants: the next
    submission goes through FastAPI and is refused (401)."""
    api, token = limited
    body = json.dumps({"ca": "R", "csr": _pem("rev.example.com")}).encode()
    ok, taken = _send(api, token["erin"], body, JSON, short=True)
    assert ok.status_code == 201 and taken == 1
    assert api.call("DELETE", "/tokens/erin", token["root"]).status_code == 200
    body = json.dumps({"ca": "R", "csr": _pem("rev2.example.com")}).encode()
    answer = requests.post(api.served.url("/api/v1/jobs"), data=body, headers={
        "Authorization": f"Bearer {token['erin']}", **JSON}, timeout=60)
    assert answer.status_code == 401
