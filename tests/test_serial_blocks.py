"""Sequential serials under batching: a batch takes its serials as one block, signs each
job once, and holds no CA row lock while signing (PostgreSQL), so CRLs do not wait for it."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError

from ca import authority, jobs, openssl_io
from ca.models import Certificate, CertificateAuthority
from ca.serials import MAX_SERIAL_BITS, serial_hex
from shell.db import transaction

from .conftest import make_csr
from .domain import PASS, in_threads, new_ca, sign
from .test_hostile_input import make_democa


class CountingSigner:
    """The CA's real signer, counting the certificates it signs."""

    def __init__(self, signer):
        self.signer, self.certificates = signer, 0

    def public_key(self):
        return self.signer.public_key()

    def sign_certificate(self, builder, digest=None):
        self.certificates += 1
        return self.signer.sign_certificate(builder, digest)

    def sign_crl(self, builder):
        return self.signer.sign_crl(builder)


def queue(sessions, clock, count, ca_name="Root", prefix="n") -> list[int]:
    csrs = [make_csr(f"{prefix}{k}.example.com") for k in range(count)]
    with transaction(sessions) as session:
        done = jobs.submit_many(session, authority.get_ca(session, ca_name), csrs,
                                profile="webserver", requester="alice", now=clock())
        return [d.job.id for d in done]


def unlocked(ca):
    return authority.load_signer(ca, PASS)


def run_batch(sessions, clock, job_ids, signer_for=unlocked) -> dict[int, str]:
    """One worker's batch, in one transaction: job id -> serial."""
    with transaction(sessions) as session:
        done = jobs.run_jobs(session, job_ids, signer_for, clock)
        return {job.id: job.serial for job in done}


def serials(sessions, ca_name="Root") -> list[int]:
    with transaction(sessions) as session:
        ca = authority.get_ca(session, ca_name)
        return sorted(int(s, 16) for s in session.scalars(
            select(Certificate.serial).where(Certificate.ca_id == ca.id)))


def next_serial(sessions, ca_name="Root") -> int:
    with transaction(sessions) as session:
        return int(authority.get_ca(session, ca_name).next_serial, 16)


def test_a_batch_of_a_sequential_ca_signs_each_job_once(sessions, clock):
    _, real = new_ca(sessions, clock, serial_mode="sequential")
    counting = CountingSigner(real)
    ids = queue(sessions, clock, 5)
    done = run_batch(sessions, clock, ids, lambda ca: counting)  # no BatchConflict
    assert counting.certificates == len(ids)
    assert [int(done[i], 16) for i in ids] == [1, 2, 3, 4, 5]
    assert serials(sessions) == [1, 2, 3, 4, 5] and next_serial(sessions) == 6


def test_serials_taken_in_one_transaction_are_distinct(sessions, clock):
    new_ca(sessions, clock, serial_mode="sequential")
    with transaction(sessions) as session:
        ca = authority.get_ca(session, "Root")
        assert [authority._next_serial(session, ca, os.urandom) for _ in range(3)] == [1, 2, 3]
        assert authority.reserve_serials(session, ca, 3) == range(4, 7)
        assert ca.next_serial == "07" and ca not in session.dirty
    assert next_serial(sessions) == 7


def test_concurrent_workers_and_signers_never_share_a_serial(sessions, clock):
    new_ca(sessions, clock, serial_mode="sequential")
    ids = queue(sessions, clock, 40)
    # four workers, each given every id in batches of 5 in another order (redeliveries)
    orders = [ids, ids[::-1], ids[20:] + ids[:20], ids[::2] + ids[1::2]]

    def worker(order):
        return [run_batch(sessions, clock, order[i:i + 5]) for i in range(0, len(order), 5)]

    def single_signer():
        return [sign(sessions, clock, "Root", make_csr(f"s{k}.example.com")).record.serial
                for k in range(5)]

    outcomes = in_threads(lambda target, *args: target(*args),
                          [(worker, order) for order in orders] + [(single_signer,)])
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    by_job = [(job_id, serial) for batches in outcomes[:4] for batch in batches
              for job_id, serial in batch.items()]
    assert sorted(job_id for job_id, _ in by_job) == ids  # each job signed by one worker
    issued = [int(serial, 16) for _, serial in by_job] + [int(s, 16) for s in outcomes[4]]
    assert sorted(issued) == serials(sessions) == list(range(1, 46))  # no gap, no repeat


def test_an_imported_democa_keeps_its_numbering_through_a_batch(sessions, clock, tmp_path):
    demo = openssl_io.read_democa(make_democa(tmp_path / "demoCA"))  # serial file: 10
    with transaction(sessions) as session:
        openssl_io.adopt(session, demo, name="Imported", import_passphrase=None,
                         passphrase=PASS, now=clock())
    ids = queue(sessions, clock, 3, ca_name="Imported")
    done = run_batch(sessions, clock, ids)
    assert [done[i] for i in ids] == ["10", "11", "12"]
    assert next_serial(sessions, "Imported") == 0x13


def test_a_rolled_back_batch_leaves_a_gap_on_postgresql_only(sessions, clock, db_url):
    new_ca(sessions, clock, serial_mode="sequential")
    ids = queue(sessions, clock, 3)
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        jobs.run_jobs(session, ids, unlocked, clock)
        raise RuntimeError("the worker died before the commit")
    done = run_batch(sessions, clock, ids)
    # PostgreSQL committed the block before signing; SQLite reserved in the batch's transaction
    first = 1 if db_url.startswith("sqlite") else 4
    assert sorted(int(s, 16) for s in done.values()) == list(range(first, first + 3))
    assert serials(sessions) == list(range(first, first + 3))


def test_a_block_past_rfc5280_bounds_leaves_each_job_the_serials_left(sessions, clock):
    new_ca(sessions, clock, serial_mode="sequential")
    last = (1 << MAX_SERIAL_BITS) - 1
    with transaction(sessions) as session:
        session.execute(update(CertificateAuthority).values(next_serial=serial_hex(last - 1)))
    ids = queue(sessions, clock, 3)
    with transaction(sessions) as session:
        done = {job.id: job for job in jobs.run_jobs(session, ids, unlocked, clock)}
        assert [done[i].serial for i in ids[:2]] == [serial_hex(last - 1), serial_hex(last)]
        assert done[ids[2]].state == "failed" and "used up" in done[ids[2]].error


def test_a_batch_for_a_handed_over_ca_fails_its_jobs_and_takes_no_serial(sessions, clock):
    new_ca(sessions, clock, serial_mode="sequential")
    ids = queue(sessions, clock, 2)
    with transaction(sessions) as session:
        authority.hand_over(session, authority.get_ca(session, "Root"), "/srv/demoCA", clock())
    with transaction(sessions) as session:
        done = jobs.run_jobs(session, ids, unlocked, clock)
        assert [job.state for job in done] == ["failed", "failed"]
        assert "handed over to openssl ca" in done[0].error
    assert next_serial(sessions) == 1


def lock_timeout(session, seconds: float = 1.0) -> None:
    """A lock not granted in time fails the statement: a regression fails, never hangs."""
    session.execute(text(f"SET LOCAL lock_timeout = '{int(seconds * 1000)}ms'"))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite: one writer
def test_a_batch_signing_holds_up_reservations_and_crls_but_not_the_handover(sessions,
                                                                              clock):
    new_ca(sessions, clock, serial_mode="sequential")
    ids = queue(sessions, clock, 2)
    with transaction(sessions) as batch:  # signed, not committed: KEY SHARE on the CA row
        signed = jobs.run_jobs(batch, ids, unlocked, clock)
        assert [job.serial for job in signed] == ["01", "02"]
        with transaction(sessions) as other:
            lock_timeout(other)
            ca = authority.get_ca(other, "Root")
            assert authority.generate_crl(other, ca, unlocked(ca), clock()).number == 1
            assert authority.reserve_serials(other, ca, 2) == range(3, 5)
        with pytest.raises(OperationalError, match="lock timeout"), \
                transaction(sessions) as handing:
            lock_timeout(handing)
            authority.hand_over(handing, authority.get_ca(handing, "Root"), "/srv/x", clock())
    assert serials(sessions) == [1, 2] and next_serial(sessions) == 5
