"""Trusted time: GNSS time carried by the monotonic clock, offsets measured, jumps and backwards time as events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.gnss_time import FixWatch, GnssClock
from firmware_protocols.nmea import GpsFix

GNSS0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
WALL0 = GNSS0 + timedelta(seconds=3, milliseconds=250)  # the terminal clock runs 3.25 s fast


def fix(t: datetime | None, valid: bool = True, plausible: bool = True) -> GpsFix:
    return GpsFix(t, 35.42, 119.52, mode=3 if valid else 1, valid=valid, time_plausible=plausible)


def test_now_follows_gnss_and_the_offset_is_measured() -> None:
    c = GnssClock()
    assert c.now(WALL0, 100.0) == WALL0  # no fix yet: the terminal clock
    assert c.on_fix(fix(GNSS0), WALL0, 100.0) == []
    assert c.offset_ms == 3250
    assert c.now(WALL0 + timedelta(seconds=2), 102.0) == GNSS0 + timedelta(seconds=2)
    stale = WALL0 + timedelta(seconds=30)
    assert c.now(stale, 130.0) == stale  # GNSS too old: the terminal clock again


def test_wall_clock_jump_is_an_event() -> None:
    c = GnssClock()
    c.on_tick(WALL0, 0.0)
    assert c.on_tick(WALL0 + timedelta(seconds=1), 1.0) == []
    (ev,) = c.on_tick(WALL0 + timedelta(hours=1, seconds=2), 2.0)  # someone set the clock an hour on
    assert ev.name == "clock_jump" and ev.details == {"by_ms": 3_600_000} and c.jumps == 1


def test_gnss_time_going_backwards_is_one_event_and_now_stays_monotonic() -> None:
    c = GnssClock()
    c.on_fix(fix(GNSS0), WALL0, 0.0)
    (ev,) = c.on_fix(fix(GNSS0 - timedelta(hours=1)), WALL0 + timedelta(seconds=1), 1.0)
    assert ev.name == "gnss_time_backwards" and ev.details["to"] == "2026-11-27T07:00:00.000Z"
    assert c.on_fix(fix(GNSS0 - timedelta(minutes=59, seconds=59)), WALL0 + timedelta(seconds=2), 2.0) == []
    assert c.now(WALL0 + timedelta(seconds=2), 2.0) == GNSS0 + timedelta(seconds=2)
    assert c.backwards == 1


def test_refused_rollover_date_is_one_event_per_run() -> None:
    c = GnssClock()
    events = [e for s in range(5) for e in c.on_fix(fix(None, plausible=False), WALL0, float(s))]
    assert [e.name for e in events] == ["gnss_time_refused"]


def test_stale_fix_is_gps_lost_then_back() -> None:
    w = FixWatch(0.0, stale_s=10.0)
    assert w.on_fix(fix(GNSS0), 1.0, GNSS0) == []
    assert w.on_tick(10.5, GNSS0) == []
    assert w.on_fix(fix(GNSS0, valid=False), 10.9, GNSS0) == []  # an invalid fix does not keep it alive
    (lost,) = w.on_tick(11.0, GNSS0)
    assert lost.name == "gps_lost" and w.lost and w.on_tick(30.0, GNSS0) == []
    (back,) = w.on_fix(fix(GNSS0), 31.0, GNSS0)
    assert back.name == "gps_back" and back.details == {"lost_ms": 30_000} and not w.lost and w.lost_count == 1


def test_no_fix_at_all_since_start_is_gps_lost() -> None:
    w = FixWatch(100.0, stale_s=10.0)
    assert [e.name for e in w.on_tick(110.0, GNSS0)] == ["gps_lost"]
