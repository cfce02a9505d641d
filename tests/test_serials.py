"""Serial numbers: CSPRNG by default, sequential on demand, never reused; unique_subject."""

import dataclasses

import pytest
from sqlalchemy import func, select

from ca import authority
from ca.errors import Conflict
from ca.models import Certificate
from shell.db import transaction

from .conftest import make_csr
from .domain import in_threads, new_ca, sign


def test_random_serials_are_long_positive_and_distinct(sessions, clock):
    new_ca(sessions, clock)
    serials = {sign(sessions, clock, "Root", make_csr(f"h{i}.example.com")).certificate
               .serial_number for i in range(20)}
    assert len(serials) == 20
    assert all(s.bit_length() == 127 for s in serials)  # >= 64 random bits, < 20 octets


def test_a_colliding_random_serial_is_drawn_again(sessions, clock):
    new_ca(sessions, clock)
    draws = iter([b"\x01" * 16, b"\x01" * 16, b"\x02" * 16])
    sign(sessions, clock, "Root", make_csr("a.example.com"))  # warm up with the real rng
    with transaction(sessions) as session:
        ca = authority.get_ca(session, "Root")
        signer = authority.load_signer(ca, b"correct horse battery staple")
        first = authority.sign_csr(session, ca, signer, make_csr("b.example.com"),
                                   profile="webserver", now=clock(), rng=lambda n: next(draws))
        second = authority.sign_csr(session, ca, signer, make_csr("c.example.com"),
                                    profile="webserver", now=clock(), rng=lambda n: next(draws))
    assert first.certificate.serial_number != second.certificate.serial_number
    assert second.certificate.serial_number == authority.random_serial(lambda n: b"\x02" * 16)


def test_sequential_serials_continue_and_survive_concurrent_signers(sessions, clock):
    new_ca(sessions, clock, serial_mode="sequential")
    per_thread = 10

    def signer(idx):
        for j in range(per_thread):
            sign(sessions, clock, "Root", make_csr(f"t{idx}-{j}.example.com"))

    assert in_threads(signer, [(i,) for i in range(4)]) == [None] * 4
    with transaction(sessions) as session:
        serials = sorted(int(s, 16) for s in session.scalars(select(Certificate.serial)))
        ca = authority.get_ca(session, "Root")
    assert serials == list(range(1, 4 * per_thread + 1))
    assert ca.next_serial == authority.serial_hex(4 * per_thread + 1)


def test_unique_subject_refuses_a_second_valid_certificate_naming_the_serial(sessions, clock):
    new_ca(sessions, clock, unique_subject=True)
    first = sign(sessions, clock, "Root", make_csr("e1.example.com")).record
    with pytest.raises(Conflict, match=first.serial):
        sign(sessions, clock, "Root", make_csr("e1.example.com"))
    with transaction(sessions) as session:
        ca = authority.get_ca(session, "Root")
        authority.revoke(session, ca, int(first.serial, 16), now=clock(), reason="superseded")
    sign(sessions, clock, "Root", make_csr("e1.example.com"))  # allowed once revoked


def test_unique_subject_frees_the_subject_when_the_certificate_expires(sessions, clock):
    new_ca(sessions, clock, unique_subject=True)
    sign(sessions, clock, "Root", make_csr("e1.example.com"), days=1)
    clock.advance(days=2)
    sign(sessions, clock, "Root", make_csr("e1.example.com"))


def test_unique_subject_no_allows_renewal_overlap(sessions, clock):
    new_ca(sessions, clock, unique_subject=False)
    sign(sessions, clock, "Root", make_csr("e1.example.com"))
    sign(sessions, clock, "Root", make_csr("e1.example.com"))
    with transaction(sessions) as session:
        assert session.scalar(select(func.count()).select_from(Certificate)) == 2


def test_unique_subject_under_concurrent_signers(sessions, clock):
    """Only one of several racing requests for the same subject may win."""
    new_ca(sessions, clock, unique_subject=True)
    outcomes = in_threads(sign, [(sessions, clock, "Root", make_csr("race.example.com"))] * 4)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict"] * 3 + ["SignResult"]


def test_turning_unique_subject_on_later_indexes_existing_certificates(sessions, clock):
    new_ca(sessions, clock, unique_subject=False)
    first = sign(sessions, clock, "Root", make_csr("e1.example.com")).record
    with transaction(sessions) as session:
        ca = authority.get_ca(session, "Root")
        authority.configure(session, ca, dataclasses.replace(
            authority.CaOptions.from_ca(ca), unique_subject=True))
    with pytest.raises(Conflict, match=first.serial):
        sign(sessions, clock, "Root", make_csr("e1.example.com"))


def test_unique_subject_cannot_be_turned_on_over_duplicates(sessions, clock):
    new_ca(sessions, clock, unique_subject=False)
    sign(sessions, clock, "Root", make_csr("e1.example.com"))
    sign(sessions, clock, "Root", make_csr("e1.example.com"))
    with pytest.raises(Conflict, match="two valid certificates"), \
            transaction(sessions) as session:
        ca = authority.get_ca(session, "Root")
        authority.configure(session, ca, dataclasses.replace(
            authority.CaOptions.from_ca(ca), unique_subject=True))
