"""Small helpers for tests that call the CA domain directly (no CLI)."""

from __future__ import annotations

import threading

from ca import authority
from ca.authority import CaOptions
from ca.names import parse_name
from shell.db import transaction

from .conftest import PASSPHRASE

PASS = PASSPHRASE.encode()


def new_ca(sessions, clock, name="Root", key_type="ec-p256", subject=None, days=3650,
           parent=None, **options):
    """Create a CA and return (ca, signer); the CA row is detached and safe to reuse."""
    with transaction(sessions) as session:
        parent_row = parent_signer = None
        if parent is not None:
            parent_row = authority.get_ca(session, parent)
            parent_signer = authority.load_signer(parent_row, PASS)
        ca, _warnings = authority.create_ca(
            session, name=name,
            subject=parse_name(subject or f"/C=GB/ST=England/O=Example/CN={name} CA"),
            key_type=key_type, passphrase=PASS, now=clock(), days=days,
            options=CaOptions(**options), parent=parent_row, parent_signer=parent_signer)
        return ca, authority.load_signer(ca, PASS)


def sign(sessions, clock, ca_name, csr: bytes, profile="webclientandserver", days=None):
    with transaction(sessions) as session:
        ca = authority.get_ca(session, ca_name)
        signer = authority.load_signer(ca, PASS)
        return authority.sign_csr(session, ca, signer, csr, profile=profile, days=days,
                                  now=clock())


def in_threads(target, args_list) -> list:
    """Run ``target(*args)`` once per entry, all at once, each thread on its own database
    connection (as separate workers would be). Returns each result or raised exception."""
    results: list = [None] * len(args_list)

    def run(index, args):
        try:
            results[index] = target(*args)
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def collide_first_serials(monkeypatch, times: int = 2, serial: int = 0x4242) -> None:
    """The first ``times`` random serials drawn are all ``serial`` (a collision no real
    generator would make), the rest random again."""
    real, drawn = authority.random_serial, []

    def colliding(rng):
        drawn.append(1)
        return serial if len(drawn) <= times else real(rng)

    monkeypatch.setattr(authority, "random_serial", colliding)
