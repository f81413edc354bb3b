"""The terminal's booking rule (issue 13): the roster says whether walk-ins are allowed and lists today's bookings;
a student's sign-in without a booking of this car now is refused with ``no_booking``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.keys import load_or_create_key
from agent.runtime import TerminalRuntime
from agent.session import FaceOutcome, TrainingSession
from agent.store import RecordStore
from firmware_protocols.errors import MalformedMessage
from firmware_protocols.messages import Roster, RosterBooking, RosterPerson

T = "3710000000000001"
SCHOOL = "3711020000000001"
COACH, BOOKED, WALK_IN = "3711020000000201", "3711020000000101", "3711020000000102"
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def roster(walk_ins: bool | None, bookings: tuple[RosterBooking, ...] | None, at: datetime = NOW) -> Roster:
    people = (RosterPerson(BOOKED, "李娜", ("C1",), "fr1:x"), RosterPerson(WALK_IN, "王芳", ("C1",), "fr1:y"))
    return Roster(T, SCHOOL, at, (RosterPerson(COACH, "张教练", ("C1",), "fr1:z"),), people, walk_ins, bookings)


def booking(at: datetime = NOW) -> RosterBooking:
    return RosterBooking(BOOKED, COACH, at - timedelta(minutes=10), at + timedelta(minutes=50))


def test_roster_booking_fields_round_trip_and_are_optional() -> None:
    r = roster(False, (booking(),))
    assert Roster.decode(r.encode()) == r
    legacy = roster(None, None)
    assert b"walk_ins" not in legacy.encode() and Roster.decode(legacy.encode()) == legacy


@pytest.mark.parametrize("bad", [b'"walk_ins":"yes"', b'"walk_ins":1'])
def test_walk_ins_must_be_a_json_boolean(bad: bytes) -> None:
    raw = roster(None, None).encode().replace(b'"v":1', b'"v":1,' + bad)
    with pytest.raises(MalformedMessage):
        Roster.decode(raw)


def test_a_booking_that_ends_before_it_opens_is_refused() -> None:
    bad = RosterBooking(BOOKED, COACH, NOW, NOW - timedelta(minutes=1))
    with pytest.raises(MalformedMessage):
        Roster.decode(roster(False, (bad,)).encode())


def test_admits_by_student_and_time() -> None:
    r = roster(False, (booking(),))
    assert r.admits(BOOKED, NOW) and r.admits(BOOKED, NOW - timedelta(minutes=10))
    assert not r.admits(BOOKED, NOW + timedelta(minutes=50)) and not r.admits(BOOKED, NOW - timedelta(minutes=11))
    assert not r.admits(WALK_IN, NOW)
    assert roster(True, (booking(),)).admits(WALK_IN, NOW)  # walk-ins allowed
    assert roster(None, None).admits(WALK_IN, NOW)  # no booking rule from the server


def test_the_runtime_refuses_a_sign_in_without_a_booking(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    store = RecordStore(tmp_path / "records.sqlite", T, key, tmp_path / "chain")
    machine = TrainingSession(T, rng=random.Random(1))
    rt = TerminalRuntime(T, store, machine, None, tmp_path)
    now = rt.now()
    rt.roster = roster(False, (booking(now),), now)
    rt.start()
    try:
        machine.coach_login(COACH, FaceOutcome("pass", COACH, 0.3), now)
        refused = rt.request("student_login", person=WALK_IN, course="1212130000")
        assert not refused.ok and refused.reason == "no_booking"
        # the booked student passes the booking rule; here the face check decides (no camera: camera_error)
        booked = rt.request("student_login", person=BOOKED, course="1212130000")
        assert booked.reason != "no_booking"
        rt.roster = roster(True, (), now)
        walk_in = rt.request("student_login", person=WALK_IN, course="1212130000")
        assert walk_in.reason != "no_booking"
    finally:
        rt.stop()
