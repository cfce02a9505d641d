"""When the nightly refresh runs, with an injected clock: due time, missed runs, a time
changed while running, two beats; leases; pkiq's own CRLs renewed before they lapse; alerts
once per problem."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from ca import authority, crl_config
from scheduler import lease, schedule, tick, upkeep
from scheduler.models import AlertState, RefreshRun
from shell.db import transaction
from tests.conftest import make_csr
from tests.domain import PASS, new_ca, sign

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---------------------------------------------------------------- pure schedule

def test_last_slot_is_today_once_the_time_has_passed_else_yesterday():
    assert schedule.last_slot("02:30", at("2026-11-27 02:30")) == at("2026-11-27 02:30")
    assert schedule.last_slot("02:30", at("2026-11-27 02:29")) == at("2026-11-26 02:30")
    assert schedule.next_slot("02:30", at("2026-11-27 10:00")) == at("2026-11-28 02:30")


def test_due_once_per_slot_and_missed_slots_run_at_start():
    now = at("2026-11-27 02:00")
    assert schedule.due("02:00", now, None) == now  # fresh install: today's slot, once
    assert schedule.due("02:00", now, now) is None  # done
    # Host down from 01:00 to 09:00: the 02:00 slot is owed and runs at start.
    assert schedule.due("02:00", at("2026-11-27 09:00"), at("2026-11-26 02:00")) == now
    # Down for three nights: one run, not three.
    assert schedule.due("02:00", at("2026-11-30 09:00"), at("2026-11-26 02:00")) == \
        at("2026-11-30 02:00")


def test_time_changed_to_later_today_runs_again_at_the_new_time():
    ran = at("2026-11-27 02:00")
    assert schedule.due("03:00", at("2026-11-27 02:30"), ran) is None  # 03:00 not reached
    assert schedule.due("03:00", at("2026-11-27 03:00"), ran) == at("2026-11-27 03:00")
    # Moved earlier than the run of today: nothing more until tomorrow.
    assert schedule.due("01:00", at("2026-11-27 05:00"), ran) is None


def test_spread_is_fixed_per_installation_and_inside_the_window():
    one = schedule.spread_offset(3600, "site-a")
    assert one == schedule.spread_offset(3600, "site-a")
    assert dt.timedelta(0) <= one < dt.timedelta(hours=1)
    offsets = {schedule.spread_offset(3600, f"site-{n}") for n in range(50)}
    assert len(offsets) > 40  # sites spread out
    assert schedule.spread_offset(0, "site-a") == dt.timedelta(0)
    slot = schedule.last_slot("02:00", at("2026-11-27 12:00"), one)
    assert slot == at("2026-11-27 02:00") + one


# ---------------------------------------------------------------- leases

def test_lease_is_exclusive_until_released_or_expired(sessions, clock):
    ttl = dt.timedelta(minutes=5)
    with transaction(sessions) as s:
        assert lease.acquire(s, "crl-refresh", "host-a:1", clock(), ttl)
    with transaction(sessions) as s:
        assert not lease.acquire(s, "crl-refresh", "host-b:2", clock(), ttl)
        assert lease.current_holder(s, "crl-refresh", clock()).holder == "host-a:1"
    clock.advance(minutes=6)  # host-a died: its lease expired
    with transaction(sessions) as s:
        assert lease.acquire(s, "crl-refresh", "host-b:2", clock(), ttl)
    with transaction(sessions) as s:
        assert not lease.renew(s, "crl-refresh", "host-a:1", clock(), ttl)  # lost it
        lease.release(s, "crl-refresh", "host-b:2")
    with transaction(sessions) as s:
        assert lease.current_holder(s, "crl-refresh", clock()) is None


def test_two_processes_racing_for_a_lease_get_it_once(sessions, clock):
    results, barrier = [], threading.Barrier(6)

    def take(n):
        barrier.wait()
        with transaction(sessions) as s:
            results.append(lease.acquire(s, "race", f"h:{n}", clock(),
                                         dt.timedelta(minutes=1)))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


# ---------------------------------------------------------------- settings

def test_settings_are_checked_before_anything_is_written(sessions, clock):
    from ca.errors import BadInput

    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time="3:05", enabled=False)
    with pytest.raises(BadInput, match="HH:MM"), transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time="25:00")
    with pytest.raises(BadInput, match="between"), transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time="04:00", parallelism=0)
    with transaction(sessions) as s:
        settings = crl_config.get_settings(s, clock())
        assert (settings.update_time, settings.enabled) == ("03:05", False)


def test_point_list_as_text_one_url_per_line(sessions, clock):
    text = "# our CAs\nhttp://a.example.com/a.crl\n\n  https://b.example.com/b.crl  \n"
    urls = crl_config.parse_point_list(text)
    assert urls == ["http://a.example.com/a.crl", "https://b.example.com/b.crl"]
    with transaction(sessions) as s:
        crl_config.add_points(s, ["http://old.example.com/x.crl"], clock())
        added, removed = crl_config.replace_points(s, urls, clock())
    assert added == urls and removed == ["http://old.example.com/x.crl"]
    with pytest.raises(Exception, match="line 2"):
        crl_config.parse_point_list("http://a/x.crl\nldap://b/y\n")


# ---------------------------------------------------------------- the tick

class Recorder:
    """Stands in for the alert channels: records what would be sent."""

    def __init__(self):
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, problem, severity):
        self.sent.append((problem.key, severity, problem.summary))
        return []


def _tick(sessions, clock, **kwargs):
    kwargs.setdefault("signer_for", None)
    kwargs.setdefault("send", Recorder())
    return tick.tick(sessions, clock, **kwargs)


def _scheduled_runs(sessions):
    with transaction(sessions) as s:
        return [(r.trigger, r.scheduled_for) for r in s.query(RefreshRun).order_by(RefreshRun.id)]


def test_tick_runs_the_refresh_at_the_configured_time_once(sessions, clock):
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time="10:30")
        s.query(RefreshRun).delete()
    # T0 is 10:00: the fresh install owes yesterday's 10:30 slot once (a missed run)...
    report = _tick(sessions, clock)
    assert report.refresh is not None and report.refresh.trigger == "missed"
    assert _tick(sessions, clock).refresh is None
    clock.advance(minutes=29)
    assert _tick(sessions, clock).refresh is None  # 10:29
    clock.advance(minutes=1)
    report = _tick(sessions, clock)  # 10:30
    assert report.refresh.trigger == "schedule"
    clock.advance(minutes=1)
    assert _tick(sessions, clock).refresh is None
    assert [t for t, _ in _scheduled_runs(sessions)] == ["missed", "schedule"]


def test_disabled_updates_do_not_run_and_a_change_applies_on_the_next_tick(sessions, clock):
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time="09:00", enabled=False)
    assert _tick(sessions, clock).refresh is None
    with transaction(sessions) as s:  # as `pkiq crl schedule --enable` would, beat running
        crl_config.update_settings(s, clock(), enabled=True)
    assert _tick(sessions, clock).refresh is not None


def test_a_time_changed_while_running_is_honoured_after_the_run(sessions, clock):
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time="10:00")
    first = _tick(sessions, clock)
    assert first.refresh is not None
    with transaction(sessions) as s:  # changed to later today: runs again then
        crl_config.update_settings(s, clock(), update_time="11:00")
    clock.advance(minutes=30)
    assert _tick(sessions, clock).refresh is None
    clock.advance(minutes=30)
    assert _tick(sessions, clock).refresh is not None


def test_a_refresh_is_not_started_while_another_holds_the_lease(sessions, clock):
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time="10:00")
        assert lease.acquire(s, "crl-refresh", "manual-run:99", clock(),
                             dt.timedelta(minutes=10))
    report = _tick(sessions, clock)
    assert report.refresh is None and "already running" in report.skipped
    assert "manual-run:99" in report.skipped
    with transaction(sessions) as s:
        lease.release(s, "crl-refresh", "manual-run:99")
    clock.advance(minutes=1)  # still owed: the next tick runs it
    assert _tick(sessions, clock).refresh is not None


def test_two_beats_ticking_at_once_run_one_refresh(sessions, clock):
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time="10:00")
    reports, barrier = [], threading.Barrier(2)

    def beat():
        barrier.wait()
        reports.append(_tick(sessions, clock))

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.refresh is not None for r in reports) == 1
    assert len(_scheduled_runs(sessions)) == 1


# ---------------------------------------------------------------- own CRLs

def _signer(ca):
    return authority.load_signer(ca, PASS)


def test_own_crl_renewed_within_the_overlap_and_after_a_revocation(sessions, clock):
    ca, _ = new_ca(sessions, clock)
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), enabled=False, overlap_hours=24)
    signer_for = _signer
    report = _tick(sessions, clock, signer_for=signer_for)
    [outcome] = report.own_crls
    assert (outcome.ca, outcome.crl_number, outcome.error) == ("Root", 1, None)
    assert "no CRL yet" in outcome.reason
    assert _tick(sessions, clock, signer_for=signer_for).own_crls == []
    with transaction(sessions) as s:
        ca = authority.get_ca(s, "Root")
        crl_hours = ca.crl_hours
    clock.advance(hours=crl_hours - 25)
    assert _tick(sessions, clock, signer_for=signer_for).own_crls == []
    clock.advance(hours=2)  # inside the 24 h overlap
    report = _tick(sessions, clock, signer_for=signer_for)
    assert "reaches nextUpdate" in report.own_crls[0].reason
    # A revocation is published on the next tick, not the next night.
    serial = int(sign(sessions, clock, "Root", make_csr("web.example.com")).record.serial, 16)
    clock.advance(minutes=1)
    with transaction(sessions) as s:
        authority.revoke(s, authority.get_ca(s, "Root"), serial, now=clock(),
                         reason="keyCompromise")
    clock.advance(minutes=1)
    report = _tick(sessions, clock, signer_for=signer_for)
    assert "revoked after CRL" in report.own_crls[0].reason
    with transaction(sessions) as s:
        crl = authority.latest_crl(s, authority.get_ca(s, "Root"))
        assert crl.entries == 1


def test_an_own_crl_that_cannot_be_renewed_is_a_problem_until_it_is(sessions, clock):
    from ca.errors import WrongPassphrase

    new_ca(sessions, clock)
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), enabled=False)

    def locked(ca):
        raise WrongPassphrase(f"wrong passphrase for CA {ca.name!r}")

    send = Recorder()
    report = _tick(sessions, clock, signer_for=locked, send=send)
    assert report.own_crls == [upkeep.OwnCrlOutcome(
        "Root", None, "it has no CRL yet", "wrong passphrase for CA 'Root'")]
    assert send.sent == [("own-renew:Root", "critical",
                          "cannot renew the CRL of pkiq CA Root: wrong passphrase for CA "
                          "'Root'")]
    renewed = _tick(sessions, clock, signer_for=_signer, send=send).own_crls
    assert [(o.ca, o.crl_number, o.error) for o in renewed] == [("Root", 1, None)]
    assert send.sent[-1][:2] == ("own-renew:Root", "resolved")


def test_an_own_crl_about_to_lapse_without_a_key_alerts_once(sessions, clock):
    ca, signer = new_ca(sessions, clock)
    hours = ca.crl_hours
    with transaction(sessions) as s:
        authority.generate_crl(s, authority.get_ca(s, "Root"), signer, clock())
        crl_config.update_settings(s, clock(), enabled=False, warn_hours=48)
    send = Recorder()
    clock.advance(hours=hours - 47)
    _tick(sessions, clock, send=send)  # no passphrase in this beat: cannot renew
    _tick(sessions, clock, send=send)
    clock.advance(minutes=30)
    _tick(sessions, clock, send=send)
    assert [(k, sev) for k, sev, _ in send.sent] == [("own-expiry:Root", "warning")]
    clock.advance(hours=48)  # lapsed: the severity changes, so once more
    _tick(sessions, clock, send=send)
    assert send.sent[-1][:2] == ("own-expiry:Root", "critical")
    assert "counts as revoked" in send.sent[-1][2]
    with transaction(sessions) as s:  # renewed by hand: resolved, said once
        authority.generate_crl(s, authority.get_ca(s, "Root"), signer, clock())
    _tick(sessions, clock, send=send)
    _tick(sessions, clock, send=send)
    assert send.sent[-1][:2] == ("own-expiry:Root", "resolved")
    assert len(send.sent) == 3
    with transaction(sessions) as s:
        assert s.query(AlertState).count() == 0


def test_an_undelivered_alert_is_retried_every_15_minutes_not_every_tick(sessions, clock):
    _ca, signer = new_ca(sessions, clock)
    with transaction(sessions) as s:
        authority.generate_crl(s, authority.get_ca(s, "Root"), signer, clock())
        crl_config.update_settings(s, clock(), enabled=False, warn_hours=24 * 30)
    attempts = []

    def failing(problem, severity):
        attempts.append(clock())
        return ["webhook http://127.0.0.1:9 unreachable"]

    for _ in range(20):  # 20 ticks a minute apart
        _tick(sessions, clock, send=failing)
        clock.advance(minutes=1)
    assert len(attempts) == 2  # at 0 and 15 minutes
    with transaction(sessions) as s:
        assert "unreachable" in s.get(AlertState, "own-expiry:Root").delivery_error


def test_a_crl_shorter_lived_than_the_overlap_is_renewed_at_half_life_not_every_tick(
        sessions, clock):
    new_ca(sessions, clock, crl_hours=12)
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), enabled=False, overlap_hours=24)
    renewed = []
    for _ in range(13 * 6):  # 13 hours of ticks, ten minutes apart
        renewed += _tick(sessions, clock, signer_for=_signer).own_crls
        clock.advance(minutes=10)
    assert len(renewed) == 3, renewed  # no CRL yet, then every 6 h (half of 12)
