"""The signing-job lifecycle in the domain: submit, approve, sign exactly once, reconcile."""

import datetime as dt

import pytest
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ca import authority, jobs
from ca.errors import BadSignature, Conflict, WrongPassphrase
from ca.models import Certificate
from ca.policy import POLICY_MATCH, Policy
from shell.db import transaction

from .conftest import make_csr
from .domain import PASS, collide_first_serials, in_threads, new_ca


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
    new_ca(sessions, clock, policy=POLICY_MATCH)  # the CA's policy is applied when signing
    job_id, _, _ = submit(sessions, clock, make_csr())  # no stateOrProvinceName
    info = run(sessions, clock, job_id)
    assert info["state"] == "failed" and "stateOrProvinceName" in info["error"]
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


# ---------------------------------------------------------------- batches

def submit_many(sessions, clock, csrs, profile="webserver", ca_name="Root"):
    with transaction(sessions) as session:
        done = jobs.submit_many(session, authority.get_ca(session, ca_name), csrs,
                                profile=profile, requester="alice", now=clock())
        return [d if isinstance(d, Exception) else (d.job.id, d.created) for d in done]


def run_batch(sessions, clock, job_ids):
    with transaction(sessions) as session:
        done = jobs.run_jobs(session, job_ids, lambda ca: authority.load_signer(ca, PASS), clock)
        return {job.id: (job.state, job.serial, job.error) for job in done}


def states(sessions, job_ids):
    with transaction(sessions) as session:
        return [jobs.get_job(session, i).state for i in job_ids]


def test_submit_many_answers_each_request_in_its_place(sessions, clock):
    new_ca(sessions, clock)
    first = make_csr("a.example.com")
    (old_id, _), = submit_many(sessions, clock, [first])
    out = submit_many(sessions, clock, [make_csr("b.example.com"), b"garbage", first,
                                        make_csr("b.example.com")])
    assert out[0][1] is True
    assert "not a certificate request" in str(out[1])
    assert out[2] == (old_id, False)  # submitted before
    assert out[3] == (out[0][0], False)  # the same request twice in one call: one job
    assert certificates(sessions) == 0 and states(sessions, [out[0][0]]) == ["queued"]


def test_a_bad_request_in_a_batch_fails_alone(sessions, clock):
    new_ca(sessions, clock, policy=Policy.parse("organizationName=match,commonName=supplied"))
    requests = [make_csr("a.example.com"), make_csr("b.example.com"),
                make_csr("x.example.com", extra_name={NameOID.ORGANIZATION_NAME: "Other"}),
                make_csr("c.example.com")]
    ids = [job_id for job_id, _ in submit_many(sessions, clock, requests)]
    done = run_batch(sessions, clock, ids)
    assert [done[i][0] for i in ids] == ["issued", "issued", "failed", "issued"]
    assert "must match the CA" in done[ids[2]][2]
    assert len({done[i][1] for i in ids if done[i][1]}) == 3
    assert certificates(sessions) == 3
    assert run_batch(sessions, clock, ids) == {}  # redelivered: nothing left to do
    assert [run(sessions, clock, i)["attempts"] for i in ids] == [1, 1, 1, 1]


def test_workers_claiming_overlapping_batches_sign_each_job_once(sessions, clock):
    new_ca(sessions, clock)
    ids = [i for i, _ in submit_many(sessions, clock, [make_csr(f"n{k}.example.com")
                                                       for k in range(24)])]
    # four workers, each given every id in another order (reconciler re-sends, redeliveries)
    orders = [ids, ids[::-1], ids[12:] + ids[:12], ids[::2] + ids[1::2]]
    outcomes = in_threads(run_batch, [(sessions, clock, order) for order in orders])
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    signed = [job_id for o in outcomes for job_id in o]
    assert sorted(signed) == ids  # every job claimed by exactly one of them
    assert states(sessions, ids) == ["issued"] * 24
    assert certificates(sessions) == 24


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite: one writer
def test_a_job_held_by_another_transaction_is_skipped_without_waiting(sessions, clock):
    new_ca(sessions, clock)
    held, free = [i for i, _ in submit_many(sessions, clock, [make_csr("a.example.com"),
                                                              make_csr("b.example.com")])]
    with transaction(sessions) as other:  # another worker's batch holds the first job
        jobs.get_job(other, held, for_update=True)
        done = run_batch(sessions, clock, [held, free])
        assert list(done) == [free]
    assert states(sessions, [held, free]) == ["queued", "issued"]
    assert run_batch(sessions, clock, [held, free]) == {held: (
        "issued", run(sessions, clock, held)["serial"], None)}


def test_a_serial_taken_inside_a_batch_rolls_it_back_for_one_at_a_time(sessions, clock,
                                                                       monkeypatch):
    """Index rows of a batch are written in one statement; should a serial be taken after all
    (here a forced collision), nothing of the batch is kept, and the jobs signed singly."""
    new_ca(sessions, clock)
    ids = [i for i, _ in submit_many(sessions, clock, [make_csr(f"n{k}.example.com")
                                                       for k in range(3)])]
    collide_first_serials(monkeypatch)
    with pytest.raises(authority.BatchConflict):
        run_batch(sessions, clock, ids)
    assert states(sessions, ids) == ["queued"] * 3 and certificates(sessions) == 0
    for job_id in ids:
        run_batch(sessions, clock, [job_id])
    assert states(sessions, ids) == ["issued"] * 3 and certificates(sessions) == 3


@pytest.mark.parametrize("prepared_under, ca_mode, refused", [
    ("none", "copy", True),   # the CA began copying names after the request was parsed
    ("none", "none", False),  # unchanged: the wildcard is ignored, as it was when parsed
])
def test_a_request_prepared_before_the_transaction_is_judged_by_the_ca_as_it_is_then(
        sessions, clock, prepared_under, ca_mode, refused):
    """Parsing happens outside the write transaction (``prepare_requests``); a CA whose
    copy_extensions changed in between has the request checked again under its setting.
    (One refused when parsed stays refused: it was, under the CA's setting of that moment.)"""
    new_ca(sessions, clock, copy_extensions=ca_mode)
    wildcard = make_csr("a.example.com", sans=("a.example.com", "*.example.com"))
    [prepared] = jobs.prepare_requests([wildcard], profile="webserver",
                                       copy_mode=prepared_under)
    assert isinstance(prepared, jobs.Prepared)
    [out] = submit_many(sessions, clock, [prepared])
    assert isinstance(out, Exception) == refused
    if refused:
        assert "wildcard" in str(out)


def test_a_request_is_verified_once_when_submitted_not_again_when_signed(sessions, clock,
                                                                         monkeypatch):
    """Proof of possession is checked at submit; the worker signs what the queue holds
    without checking the same signature again (issue 14: 0.28 ms of worker CPU per job)."""
    from ca import csr as csr_module

    checked = []
    real = csr_module.verify_csr_signature
    monkeypatch.setattr(csr_module, "verify_csr_signature",
                        lambda request: checked.append(request.subject) or real(request))
    new_ca(sessions, clock)
    ids = [i for i, _ in submit_many(sessions, clock, [make_csr(f"v{k}.example.com")
                                                       for k in range(3)])]
    assert len(checked) == 3
    done = run_batch(sessions, clock, ids)
    assert [done[i][0] for i in ids] == ["issued"] * 3
    assert len(checked) == 3  # none more
    altered = bytearray(make_csr("w.example.com", der=True))
    altered[-3] ^= 1  # a byte of the signature
    with pytest.raises(BadSignature, match="does not verify"):  # submit and ca sign verify
        csr_module.load_csr(bytes(altered))
