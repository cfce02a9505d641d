"""The signing-job lifecycle in the domain: submit, approve, sign exactly once, reconcile."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from ca import authority, jobs
from ca.errors import Conflict, WrongPassphrase
from ca.models import Certificate
from pkiq.db import transaction

from .conftest import make_csr
from .domain import PASS, in_threads, new_ca


def submit(sessions, clock, csr, profile="webserver", ca_name="Root"):
    with transaction(sessions) as session:
        done = jobs.submit(session, authority.get_ca(session, ca_name), csr, profile=profile,
                           requester="alice", now=clock())
        return done.job.id, done.created, done.job.state


def run(sessions, clock, job_id, signer_for=None):
    with transaction(sessions) as session:
        signer_for = signer_for or (lambda ca: authority.load_signer(ca, PASS))
        job = jobs.run_job(session, job_id, signer_for, clock)
        return jobs.job_info(job) if job else None


def certificates(sessions) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).select_from(Certificate))


def test_submitting_the_same_request_again_returns_the_job(sessions, clock):
    new_ca(sessions, clock)
    csr = make_csr()
    first = submit(sessions, clock, csr)
    assert first[1:] == (True, "queued")
    again = submit(sessions, clock, csr)
    assert again == (first[0], False, "queued")
    other_profile = submit(sessions, clock, csr, profile="client")
    assert other_profile[0] != first[0]


def test_a_job_is_signed_once_however_often_it_is_delivered(sessions, clock):
    new_ca(sessions, clock)
    job_id, _, _ = submit(sessions, clock, make_csr())
    info = run(sessions, clock, job_id)
    assert info["state"] == "issued" and info["serial"] and info["attempts"] == 1
    again = run(sessions, clock, job_id)
    assert again["serial"] == info["serial"] and again["attempts"] == 1
    assert certificates(sessions) == 1
    assert run(sessions, clock, 999999) is None


def test_concurrent_deliveries_of_one_job(sessions, clock):
    new_ca(sessions, clock)
    job_id, _, _ = submit(sessions, clock, make_csr())
    outcomes = in_threads(run, [(sessions, clock, job_id)] * 4)
    assert [o["state"] for o in outcomes] == ["issued"] * 4
    assert len({o["serial"] for o in outcomes}) == 1
    assert certificates(sessions) == 1


def test_manual_approval(sessions, clock):
    new_ca(sessions, clock, approval="manual")
    job_id, _, state = submit(sessions, clock, make_csr())
    assert state == "awaiting_approval"
    assert run(sessions, clock, job_id)["state"] == "awaiting_approval"  # not signed yet
    with transaction(sessions) as session:
        assert jobs.approve(session, job_id, by="bob", now=clock()).state == "queued"
    info = run(sessions, clock, job_id)
    assert info["state"] == "issued" and info["decided_by"] == "bob"
    other, _, _ = submit(sessions, clock, make_csr("other.example.com"))
    with transaction(sessions) as session:
        rejected = jobs.reject(session, other, by="bob", now=clock(), reason="not ours")
        assert (rejected.state, rejected.error) == ("rejected", "not ours")
    with pytest.raises(Conflict, match="not awaiting approval"), transaction(sessions) as s:
        jobs.approve(s, other, by="bob", now=clock())


def test_permanent_errors_fail_at_once_with_the_reason(sessions, clock):
    new_ca(sessions, clock)
    job_id, _, _ = submit(sessions, clock, make_csr("*.example.com"))
    info = run(sessions, clock, job_id)
    assert info["state"] == "failed" and "wildcard" in info["error"]
    assert certificates(sessions) == 0
    with transaction(sessions) as session:
        assert jobs.retry(session, job_id, now=clock()).state == "queued"
    assert run(sessions, clock, job_id)["attempts"] == 2


def test_a_locked_ca_key_fails_the_job_and_retry_requeues_it(sessions, clock):
    new_ca(sessions, clock)
    job_id, _, _ = submit(sessions, clock, make_csr())

    def no_key(ca):
        raise WrongPassphrase("no passphrase for the worker")

    assert run(sessions, clock, job_id, no_key)["error"] == "no passphrase for the worker"
    with transaction(sessions) as session:
        jobs.retry(session, job_id, now=clock())
    assert run(sessions, clock, job_id)["state"] == "issued"


def test_the_reconciler_resends_stale_jobs_once_per_timeout(sessions, clock):
    new_ca(sessions, clock)
    job_id, _, _ = submit(sessions, clock, make_csr())
    timeout = dt.timedelta(minutes=5)

    def stale():
        with transaction(sessions) as session:
            return jobs.stale_jobs(session, clock(), timeout)

    clock.advance(minutes=4)
    assert stale() == []
    clock.advance(minutes=2)
    assert stale() == [job_id]
    assert stale() == []  # its clock restarted
    clock.advance(minutes=6)
    assert stale() == [job_id]
    run(sessions, clock, job_id)
    clock.advance(minutes=6)
    assert stale() == []  # issued jobs are never re-sent
