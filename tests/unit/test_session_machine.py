"""The terminal's session state machine: transitions, minutes on GNSS boundaries, re-checks, refusals."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from agent.session import (
    EmitRecord,
    FaceOutcome,
    RequestFaceCheck,
    SessionRefused,
    State,
    TrainingSession,
    VehicleSample,
)
from firmware_protocols.nmea import GpsFix
from firmware_protocols.records import RecordKind

T = "3710000000000001"
COACH, STUDENT = "3711020000000201", "3711020000000101"
T0 = datetime(2026, 11, 27, 0, 30, 10, tzinfo=UTC)


def fix(t: datetime, lat: float = 35.42, lon: float = 119.52, speed: float = 4.0) -> GpsFix:
    return GpsFix(time=t, lat=lat, lon=lon, speed_mps=speed, track_deg=90.0, mode=3, satellites=9, hdop=0.9,
                  valid=True)  # fmt: skip


def ok(person: str) -> FaceOutcome:
    return FaceOutcome("pass", person, 0.31)


def records(actions: list) -> list[EmitRecord]:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, EmitRecord)]


def signed_in(recheck: int = 15) -> TrainingSession:
    m = TrainingSession(T, recheck_minutes=recheck, rng=random.Random(1))
    m.coach_login(COACH, ok(COACH), T0)
    m.student_login(STUDENT, "1212130000", ok(STUDENT), T0, next_seq=3, chain=1)
    return m


def test_full_session_emits_minutes_on_gnss_boundaries() -> None:
    m = signed_in()
    assert m.state is State.TRAINING and m.session_id == f"{T}-1-4"
    out = []
    for s in range(0, 150):  # 00:30:10 .. 00:32:39, moving east
        out += m.on_fix(fix(T0 + timedelta(seconds=s), lon=119.52 + s * 0.00004))
    minutes = [r for r in records(out) if r.kind is RecordKind.MINUTE]
    assert [r.at for r in minutes] == [
        datetime(2026, 11, 27, 0, 30, tzinfo=UTC),
        datetime(2026, 11, 27, 0, 31, tzinfo=UTC),
    ]
    first, second = minutes[0].body, minutes[1].body
    assert first["fix_count"] == 50 and second["fix_count"] == 60
    assert second["fix30"]["t"] == "2026-11-27T00:31:30Z"
    assert 200 < second["distance_m"] < 240  # 60 × 0.00004° of longitude at 35.42° N ≈ 218 m
    assert second["max_speed"] == 144 and second["vehicle"] is None and minutes[0].needs_record_no
    out = m.student_logout(ok(STUDENT), T0 + timedelta(seconds=150))
    kinds = [r.kind for r in records(out)]
    assert kinds == [RecordKind.FACE_CHECK, RecordKind.MINUTE, RecordKind.STUDENT_LOGOUT]
    assert m.state is State.COACH


def test_vehicle_signal_goes_into_the_minute() -> None:
    m = signed_in()
    m.on_vehicle(VehicleSample(True, 1800, 15.0))
    out = []
    for s in range(0, 70):
        out += m.on_fix(fix(T0 + timedelta(seconds=s)))
    (minute,) = [r for r in records(out) if r.kind is RecordKind.MINUTE]
    assert minute.body["vehicle"] == {"rpm": 1800, "speed": 150, "speed_readings": 1, "ignition": True}


def test_the_cars_vin_goes_into_the_minute_when_the_car_gives_one() -> None:
    m = signed_in()
    m.on_vehicle(VehicleSample(True, 1800, 15.0, "LFVBA24K5NR000001"))
    out = []
    for s in range(0, 70):
        if s == 65:
            m.on_vehicle(VehicleSample(True, 1700, 14.0))  # a reading without a VIN does not erase the one seen
        out += m.on_fix(fix(T0 + timedelta(seconds=s)))
    out += m.student_logout(ok(STUDENT), T0 + timedelta(seconds=70))
    first, second = [r.body["vehicle"] for r in records(out) if r.kind is RecordKind.MINUTE]
    assert first == {"rpm": 1800, "speed": 150, "speed_readings": 1, "ignition": True, "vin": "LFVBA24K5NR000001"}
    assert second == {"rpm": 1700, "speed": 140, "speed_readings": 1, "ignition": True}  # no VIN: the field is absent


def test_a_face_that_does_not_match_does_not_sign_in() -> None:
    m = TrainingSession(T)
    out = m.coach_login(COACH, FaceOutcome("pass", "3711020000000299", 0.45), T0)
    assert m.state is State.IDLE
    (check,) = records(out)
    assert check.kind is RecordKind.FACE_CHECK and check.body["result"] == "fail"


@pytest.mark.parametrize(("call", "reason"), [("student_logout", "no_student"), ("coach_logout", "no_coach")])
def test_requests_out_of_order_are_refused(call: str, reason: str) -> None:
    with pytest.raises(SessionRefused) as exc:
        getattr(TrainingSession(T), call)(ok(COACH), T0)
    assert exc.value.reason == reason


def test_coach_cannot_leave_with_a_student_in() -> None:
    with pytest.raises(SessionRefused) as exc:
        signed_in().coach_logout(ok(COACH), T0)
    assert exc.value.reason == "student_still_in"


def test_random_recheck_once_per_window() -> None:
    m = signed_in(recheck=15)
    checks = []
    for s in range(0, 45 * 60, 5):
        checks += [a for a in m.on_fix(fix(T0 + timedelta(seconds=s))) if isinstance(a, RequestFaceCheck)]
        if checks and m._check_pending:  # the runtime answers each request
            m.face_check_done(ok(STUDENT), T0 + timedelta(seconds=s))
    assert len(checks) == 3


def test_minutes_without_fixes_close_on_the_terminal_clock() -> None:
    m = signed_in()
    m.on_fix(fix(T0))
    out = m.on_tick(T0 + timedelta(minutes=3))
    minutes = [r for r in records(out) if r.kind is RecordKind.MINUTE]
    assert len(minutes) == 3 and minutes[1].body["fix_count"] == 0 and minutes[1].body["fix30"] is None


def test_teleport_speed_is_not_used_for_distance() -> None:
    m = signed_in()
    out = m.on_fix(fix(T0, speed=0.0))
    out += m.on_fix(fix(T0 + timedelta(seconds=1), lat=36.0, speed=500.0))
    out += m.on_fix(fix(T0 + timedelta(seconds=2), lat=37.0, speed=4.0))  # plausible speed, impossible jump
    out += m.on_tick(T0 + timedelta(minutes=2))
    (minute, *_) = [r for r in records(out) if r.kind is RecordKind.MINUTE]
    assert minute.body["distance_m"] == 0 and minute.body["max_speed"] == 144


def test_minute_record_marks_jumps_and_carries_the_clock_offset() -> None:
    m = signed_in()
    m.note_clock_offset(-1250)
    out = m.on_fix(fix(T0, speed=4.0))
    out += m.on_fix(fix(T0 + timedelta(seconds=1), lat=35.52, speed=4.0))  # 11 km in a second
    out += m.on_tick(T0 + timedelta(minutes=2))
    (minute, *_) = [r for r in records(out) if r.kind is RecordKind.MINUTE]
    assert minute.body["distance_m"] == 0
    assert minute.body["gnss"] == {"jumps": 1, "clock_offset_ms": -1250}


def test_parked_car_drifting_accumulates_no_metres() -> None:
    m = signed_in()
    rng = random.Random(5)
    out = []
    for s in range(120):
        out += m.on_fix(fix(T0 + timedelta(seconds=s), lat=35.42 + rng.gauss(0, 2e-5), lon=119.52 + rng.gauss(0, 2e-5),
                            speed=abs(rng.gauss(0, 0.1))))  # fmt: skip
    minutes = [r for r in records(out) if r.kind is RecordKind.MINUTE]
    assert minutes and all(r.body["distance_m"] == 0 for r in minutes)


def test_a_car_that_gives_no_speed_reports_none_not_zero() -> None:
    """Zero would read as "wheels still" to the server's GNSS-against-OBD speed rule: a car without PID 0D says
    nothing about its speed, and one reading with a speed is the minute's speed."""
    m = signed_in()
    m.on_vehicle(VehicleSample(True, 1800, None))
    out = []
    for s in range(0, 70):
        if s == 65:
            m.on_vehicle(VehicleSample(True, 1700, 14.2))
        out += m.on_fix(fix(T0 + timedelta(seconds=s)))
    out += m.student_logout(ok(STUDENT), T0 + timedelta(seconds=70))
    first, second = [r.body["vehicle"] for r in records(out) if r.kind is RecordKind.MINUTE]
    assert first == {"rpm": 1800, "speed": None, "speed_readings": 0, "ignition": True}
    assert second == {"rpm": 1700, "speed": 142, "speed_readings": 1, "ignition": True}
