"""A submit remembers what it saw of a CA (its copy_extensions) so the next one parses its
requests without reading the CA first (``ServiceContext.hints``); the write transaction
checks the CA as it is then, so a hint that went stale changes no answer."""

from __future__ import annotations

import pytest

from ca.authority import HandedOver
from ca.errors import NotFound
from service import cas
from service import jobs as job_service

from .conftest import make_csr
from .domain import PASS


@pytest.fixture
def root(app):
    cas.create_ca(app, name="Root", subject="/C=GB/O=Example/CN=Example Root CA",
                  key_type="ec-p256", days=3650, passphrase=PASS)
    return app


def _submit(ctx, *csrs, profile="webserver"):
    rows, _warning = job_service.queue_requests(ctx.acting_as(ctx.actor, announcer=None),
                                                "Root", list(csrs), profile=profile,
                                                requester="alice")
    return rows


def test_the_second_submit_reads_no_ca_first(root, monkeypatch):
    """The first submit to a CA reads it before parsing; later ones go straight to parsing
    under the remembered setting (one transaction, not two)."""
    reads = []
    real = root.read_transaction
    monkeypatch.setattr(type(root), "read_transaction",
                        lambda self: reads.append(1) or real())
    assert _submit(root, make_csr("a.example.com"))[0]["state"] == "queued"
    assert _submit(root, make_csr("b.example.com"))[0]["state"] == "queued"
    assert len(reads) == 1
    assert root.hints[("copy_extensions", "Root")] == cas.show_ca(root, "Root")[0][
        "copy_extensions"]


@pytest.mark.parametrize("later_mode, refused", [("copy", True), ("none", False)])
def test_a_stale_copy_extensions_hint_changes_no_answer(root, later_mode, refused):
    """The CA begins copying the requests' names after a submit taught this process its old
    setting: the next wildcard request is judged under the new one (refused), as a process
    that never saw the CA would judge it."""
    cas.configure_ca(root, "Root", cas.CaChanges(copy_extensions="none"))
    _submit(root, make_csr("first.example.com"))
    assert root.hints[("copy_extensions", "Root")] == "none"
    cas.configure_ca(root, "Root", cas.CaChanges(copy_extensions=later_mode))
    [row] = _submit(root, make_csr("a.example.com", sans=("a.example.com", "*.example.com")))
    assert (row["state"] == "refused") == refused
    if refused:
        assert "wildcard" in row["error"]
    assert root.hints[("copy_extensions", "Root")] == later_mode


def test_a_ca_handed_over_after_a_submit_refuses_the_next(root, tmp_path):
    """The in-service check happens in the write transaction too, not only in the first read."""
    _submit(root, make_csr("first.example.com"))
    cas.export_openssl(root, "Root", tmp_path / "demoCA", handover=True)
    with pytest.raises(HandedOver, match="handed over to openssl ca"):
        _submit(root, make_csr("second.example.com"))


def test_an_unknown_ca_is_not_remembered(root):
    with pytest.raises(NotFound, match="no CA named 'Nope'"):
        job_service.queue_requests(root, "Nope", [make_csr("x.example.com")],
                                   profile="webserver", requester="alice")
    assert ("copy_extensions", "Nope") not in root.hints


@pytest.mark.parametrize("later_mode, refused", [("copy", True), ("none", False)])
def test_requests_prepared_under_a_stale_hint_are_checked_again(root, later_mode, refused):
    """What the API does: the batch is prepared first (``prepare_known``, under the hint)
    and written later; the CA's setting changed in between decides, as above."""
    cas.configure_ca(root, "Root", cas.CaChanges(copy_extensions="none"))
    _submit(root, make_csr("first.example.com"))
    wildcard = make_csr("a.example.com", sans=("a.example.com", "*.example.com"))
    prepared = job_service.prepare_known(root, "Root", [wildcard, b"garbage"],
                                         profile="webserver")
    assert not isinstance(prepared[0], bytes)  # prepared under "none": accepted so far
    cas.configure_ca(root, "Root", cas.CaChanges(copy_extensions=later_mode))
    row, garbage = _submit(root, *prepared)
    assert (row["state"] == "refused") == refused
    assert garbage["state"] == "refused"
    assert garbage["error"].startswith("not a certificate request")


def test_nothing_is_prepared_for_a_ca_not_seen_yet(root):
    """Without a hint ``prepare_known`` leaves the requests as they are, for
    ``queue_requests`` to read the CA and prepare them."""
    csr = make_csr("unseen.example.com")
    assert job_service.prepare_known(root, "Root", [csr], profile="webserver") == [csr]
    [row] = _submit(root, *job_service.prepare_known(root, "Root", [csr], profile="webserver"))
    assert row["state"] == "queued"
