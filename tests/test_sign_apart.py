"""Workers on SQLite sign holding no lock: a batch is claimed in one short transaction
(state ``signing``), signed with no transaction open, and recorded in another. Whatever happens in
between (the CA changed or handed over, the claim given up and taken by another worker, the
batch broken) each job ends with exactly one certificate or one reason."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select, update

from ca import authority, jobs
from ca.models import Certificate, CertificateAuthority, SigningJob
from ca.policy import Policy
from service.jobs import sign_batch
from shell.db import transaction

from .conftest import make_csr
from .domain import collide_first_serials, in_threads, new_ca
from .test_serial_blocks import CountingSigner, lock_timeout, queue, serials, unlocked


def sign_apart(*args, **kwargs):
    """``sign_batch`` as it runs on SQLite: the protocol holds on PostgreSQL too."""
    return sign_batch(*args, apart=True, **kwargs)


class Probe(CountingSigner):
    """The CA's real signer, which runs ``before`` once, when it signs the first time: that
    is, while the batch is being signed."""

    def __init__(self, signer, before):
        super().__init__(signer)
        self.before, self.seen = before, None

    def sign_certificate(self, builder, digest=None):
        if self.certificates == 0:
            self.seen = self.before()
        return super().sign_certificate(builder, digest)


def job_rows(sessions, ids) -> list[tuple[str, int, str | None]]:
    with transaction(sessions) as session:
        return [(job.state, job.attempts, job.error) for job in session.scalars(
            select(SigningJob).where(SigningJob.id.in_(ids)).order_by(SigningJob.id))]


def certificate_count(sessions) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).select_from(Certificate))


def certificate_ders(sessions) -> list[bytes]:
    with transaction(sessions) as session:
        return list(session.scalars(select(Certificate.der).order_by(Certificate.id)))


def what_another_writer_finds(db_url, sessions, ids):
    """From another connection, while the batch signs: take the writer lock (SQLite) or the
    jobs' and the CA's rows for update without waiting (PostgreSQL); the jobs' states."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0.2)
        try:
            conn.execute("BEGIN IMMEDIATE")  # "database is locked" if the batch held it
            marks = ",".join("?" * len(ids))
            return [state for (state,) in conn.execute(
                f"SELECT state FROM signing_jobs WHERE id IN ({marks}) ORDER BY id", ids)]
        finally:
            conn.close()
    with transaction(sessions) as other:
        lock_timeout(other, 0.5)
        other.execute(select(CertificateAuthority.id).with_for_update(nowait=True)).all()
        return list(other.scalars(select(SigningJob.state).where(SigningJob.id.in_(ids))
                                  .order_by(SigningJob.id).with_for_update(nowait=True)))


def test_a_batch_is_signed_with_no_lock_held_and_its_jobs_shown_signing(sessions, clock,
                                                                       db_url):
    _, real = new_ca(sessions, clock)
    ids = queue(sessions, clock, 4)
    probe = Probe(real, lambda: what_another_writer_finds(db_url, sessions, ids))
    done = sign_apart(sessions, ids, lambda ca: probe, clock)
    assert probe.seen == ["signing"] * 4  # another writer got in, and saw the claim
    assert [job.state for job in done] == ["issued"] * 4 and probe.certificates == 4
    assert job_rows(sessions, ids) == [("issued", 1, None)] * 4
    assert certificate_count(sessions) == 4


@pytest.mark.parametrize("serial_mode", ["random", "sequential"])
def test_concurrent_workers_sign_each_job_once_with_distinct_serials(sessions, clock,
                                                                     serial_mode):
    _, real = new_ca(sessions, clock, serial_mode=serial_mode)
    counting = CountingSigner(real)
    ids = queue(sessions, clock, 30)
    orders = [ids, ids[::-1], ids[15:] + ids[:15]]  # every id to each worker (redeliveries)

    def worker(order):
        return [job.id for i in range(0, len(order), 5)
                for job in sign_apart(sessions, order[i:i + 5], lambda ca: counting, clock)]

    outcomes = in_threads(worker, [(order,) for order in orders])
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert sorted(i for o in outcomes for i in o) == ids  # each recorded by one worker
    assert counting.certificates == 30  # and signed once: a claimed job is not signed again
    assert job_rows(sessions, ids) == [("issued", 1, None)] * 30
    issued = serials(sessions)
    assert len(set(issued)) == 30
    if serial_mode == "sequential":
        assert issued == list(range(1, 31))


def test_a_ca_whose_settings_changed_during_signing_has_its_jobs_signed_again(sessions,
                                                                              clock):
    _, real = new_ca(sessions, clock)
    ids = queue(sessions, clock, 3)
    url = "http://pki.example.com/root.crl"

    def publish_a_crl_url():
        with transaction(sessions) as session:
            session.execute(update(CertificateAuthority).values(crl_urls=[url]))

    probe = Probe(real, publish_a_crl_url)
    done = sign_apart(sessions, ids, lambda ca: probe, clock)
    assert [job.state for job in done] == ["issued"] * 3
    assert probe.certificates == 6  # three under the old settings, dropped; three again
    ders = certificate_ders(sessions)
    assert len(ders) == 3 and all(url.encode() in der for der in ders)


def test_a_ca_handed_over_during_signing_fails_its_jobs_and_keeps_nothing(sessions, clock):
    _, real = new_ca(sessions, clock)
    ids = queue(sessions, clock, 3)

    def hand_over():
        with transaction(sessions) as session:
            authority.hand_over(session, authority.get_ca(session, "Root"), "/srv/demoCA",
                                clock())

    done = sign_apart(sessions, ids, lambda ca: Probe(real, hand_over), clock)
    assert [job.state for job in done] == ["failed"] * 3
    assert all("handed over to openssl ca" in job.error for job in done)
    assert certificate_count(sessions) == 0


def test_a_claim_given_up_by_the_reconciler_is_recorded_by_its_new_worker_only(sessions,
                                                                               clock):
    new_ca(sessions, clock)
    ids = queue(sessions, clock, 3)
    with transaction(sessions) as session:  # worker A claims, then stalls past the timeout
        stalled = jobs.claim_jobs(session, ids, clock())
    clock.advance(minutes=6)
    with transaction(sessions) as session:
        assert jobs.stale_jobs(session, clock(), dt.timedelta(minutes=5)) == ids
    assert [state for state, _, _ in job_rows(sessions, ids)] == ["queued"] * 3
    assert len(sign_apart(sessions, ids, unlocked, clock)) == 3  # worker B
    jobs.sign_claimed(stalled, unlocked, clock)  # A wakes up and finishes its work
    with transaction(sessions) as session:
        assert jobs.record_claimed(session, stalled, unlocked, clock) == []
    assert job_rows(sessions, ids) == [("issued", 2, None)] * 3
    assert certificate_count(sessions) == 3


def test_a_claim_is_left_to_its_worker_until_the_lease_runs_out(sessions, clock):
    new_ca(sessions, clock)
    ids = queue(sessions, clock, 2)
    lease = dt.timedelta(minutes=5)
    with transaction(sessions) as session:  # a worker claims them, then dies
        assert len(jobs.claim_jobs(session, ids, clock(), lease).jobs) == 2
    clock.advance(minutes=4)
    assert sign_apart(sessions, ids, unlocked, clock, lease=lease) == []  # still its own
    clock.advance(minutes=2)
    assert len(sign_apart(sessions, ids, unlocked, clock, lease=lease)) == 2
    assert job_rows(sessions, ids) == [("issued", 2, None)] * 2


def test_a_batch_that_breaks_while_signing_gives_its_jobs_back_at_once(sessions, clock):
    _, real = new_ca(sessions, clock)
    ids = queue(sessions, clock, 3)

    def broken():
        raise RuntimeError("the HSM went away")

    with pytest.raises(RuntimeError, match="HSM"):
        sign_apart(sessions, ids, lambda ca: Probe(real, broken), clock)
    assert [state for state, _, _ in job_rows(sessions, ids)] == ["queued"] * 3
    assert certificate_count(sessions) == 0
    assert len(sign_apart(sessions, ids, unlocked, clock)) == 3  # no lease to wait for


def test_a_serial_taken_while_signing_rolls_the_record_back_and_gives_the_jobs_back(
        sessions, clock, monkeypatch):
    new_ca(sessions, clock)
    ids = queue(sessions, clock, 3)
    collide_first_serials(monkeypatch)
    with pytest.raises(authority.BatchConflict):
        sign_apart(sessions, ids, unlocked, clock)
    assert [state for state, _, _ in job_rows(sessions, ids)] == ["queued"] * 3
    assert certificate_count(sessions) == 0
    for job_id in ids:  # what the task does next: one at a time
        assert [job.state for job in sign_apart(sessions, [job_id], unlocked, clock)] == [
            "issued"]
    assert certificate_count(sessions) == 3


def test_unique_subject_is_judged_when_the_batch_is_recorded(sessions, clock):
    _, real = new_ca(sessions, clock, unique_subject=True)
    counting = CountingSigner(real)
    requests = [make_csr("same.example.com"),
                make_csr("same.example.com", key=ec.generate_private_key(ec.SECP256R1()))]
    with transaction(sessions) as session:  # two keys, one subject
        ids = [d.job.id for d in jobs.submit_many(
            session, authority.get_ca(session, "Root"), requests, profile="webserver",
            requester="alice", now=clock())]
    done = sign_apart(sessions, ids, lambda ca: counting, clock)
    assert [job.state for job in done] == ["issued", "failed"]
    assert "unique_subject" in done[1].error
    assert counting.certificates == 1 and certificate_count(sessions) == 1


def test_a_refused_request_fails_with_its_reason_beside_the_others(sessions, clock):
    new_ca(sessions, clock, policy=Policy.parse("organizationName=match,commonName=supplied"))
    requests = [make_csr("a.example.com"),
                make_csr("x.example.com", extra_name={NameOID.ORGANIZATION_NAME: "Other"}),
                make_csr("c.example.com")]
    with transaction(sessions) as session:
        ids = [d.job.id for d in jobs.submit_many(
            session, authority.get_ca(session, "Root"), requests, profile="webserver",
            requester="alice", now=clock())]
    done = sign_apart(sessions, ids, unlocked, clock)
    assert [job.state for job in done] == ["issued", "failed", "issued"]
    assert "must match the CA" in done[1].error
    assert certificate_count(sessions) == 2
    assert sign_apart(sessions, ids, unlocked, clock) == []  # redelivered: nothing to do


def test_a_job_awaiting_approval_is_claimed_only_once_approved(sessions, clock):
    new_ca(sessions, clock, approval="manual")
    [job_id] = queue(sessions, clock, 1)
    assert sign_apart(sessions, [job_id], unlocked, clock) == []  # the message came early
    assert job_rows(sessions, [job_id]) == [("awaiting_approval", 0, None)]
    with transaction(sessions) as session:
        jobs.approve(session, job_id, by="bob", now=clock())
    [done] = sign_apart(sessions, [job_id], unlocked, clock)
    assert (done.state, done.decided_by) == ("issued", "bob")
    assert job_rows(sessions, [job_id]) == [("issued", 1, None)]


def test_a_submit_commits_while_a_batch_signs(sessions, clock):
    """The reason for all this on SQLite, where a transaction holds the whole database:
    while a batch signs, a submit to the same database commits at once (in the same thread
    here: had the batch kept its transaction open, this would wait for itself)."""
    _, real = new_ca(sessions, clock)
    ids = queue(sessions, clock, 2)

    def submit_meanwhile():
        return queue(sessions, clock, 1, prefix="meanwhile")

    probe = Probe(real, submit_meanwhile)
    sign_apart(sessions, ids, lambda ca: probe, clock)
    assert len(probe.seen) == 1 and job_rows(sessions, probe.seen)[0][0] == "queued"


def test_the_default_splits_the_batch_on_sqlite_only(sessions, clock, db_url):
    """On PostgreSQL the batch's row locks hold back nobody but another worker on the same
    jobs, so it stays one transaction: nothing shows ``signing``, and the rows are held."""
    _, real = new_ca(sessions, clock)
    ids = queue(sessions, clock, 2)

    def look():
        try:
            return what_another_writer_finds(db_url, sessions, ids)
        except Exception as exc:  # noqa: BLE001 - what the other writer met is the answer
            return type(exc).__name__

    probe = Probe(real, look)
    assert [job.state for job in sign_batch(sessions, ids, lambda ca: probe, clock)] == [
        "issued"] * 2
    assert probe.seen == (["signing"] * 2 if db_url.startswith("sqlite")
                          else "OperationalError")
