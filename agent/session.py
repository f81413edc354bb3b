"""The training-session state machine of the terminal: pure, fed with events and times, returning actions.

    IDLE ──coach_login──▶ COACH ──student_login──▶ TRAINING ──student_logout──▶ COACH ──coach_logout──▶ IDLE

While TRAINING, GNSS fixes and vehicle samples accumulate into the current minute; the minute closes when a fix of a
later minute arrives (minute boundaries follow GNSS time) or, without fixes, when the terminal clock passes the end
of the minute by :data:`MINUTE_CLOSE_GRACE`. Random face re-checks are requested once in each re-check window.
Distance comes from one :class:`agent.odometry.Odometer` per session (a step across a minute boundary counts in the
later minute); the minute record's ``gnss`` object (an extra body field, allowed by the contract) holds the jumps
that were marked and not added, and the terminal clock's offset from GNSS time (``clock_offset_ms``, terminal minus
GNSS, as last measured by the runtime through :meth:`TrainingSession.note_clock_offset`).

The machine never does I/O: it returns :class:`EmitRecord` (the runtime appends, signs and commits it, then calls
:meth:`TrainingSession.on_appended` with the sequence number it got) and :class:`RequestFaceCheck` actions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from agent.odometry import MAX_PLAUSIBLE_SPEED_MPS, Odometer
from firmware_protocols.identifiers import CourseCode
from firmware_protocols.nmea import GpsFix
from firmware_protocols.records import RecordKind, format_time

#: Without fixes a minute is closed this long after its end, by the terminal clock.
MINUTE_CLOSE_GRACE = timedelta(seconds=5)
#: One sample of position every this many seconds goes into the minute record (evidence for track continuity).
SAMPLE_EVERY_S = 10


class State(StrEnum):
    IDLE = "idle"
    COACH = "coach"
    TRAINING = "training"


@dataclass(frozen=True, slots=True)
class FaceOutcome:
    """What the identity check said: ``result`` is a records.FaceResult value, ``distance`` the template distance."""

    result: str
    person: str | None
    distance: float | None = None

    def to_body(self) -> dict[str, Any]:
        return {"result": self.result, "distance": None if self.distance is None else round(self.distance * 1000)}


@dataclass(frozen=True, slots=True)
class VehicleSample:
    ignition: bool
    rpm: int
    speed_kmh: float | None  # None: the car does not report its speed
    vin: str | None = None  # the car's VIN as read over OBD-II (well-formed), None when unknown


@dataclass(frozen=True, slots=True)
class EmitRecord:
    kind: RecordKind
    at: datetime
    body: dict[str, Any]
    needs_record_no: bool = False  # the store assigns the 26-char record number inside its transaction


@dataclass(frozen=True, slots=True)
class RequestFaceCheck:
    person: str
    role: str
    trigger: str


Action = EmitRecord | RequestFaceCheck


class SessionRefused(Exception):
    """A request that the current state does not allow; ``reason`` is a code the coach screen shows."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Minute:
    start: datetime
    fixes: int = 0
    max_speed_mps: float = 0.0
    distance_m: float = 0.0
    jumps: int = 0
    fix30: GpsFix | None = None
    samples: list[list[int]] = field(default_factory=list)
    next_sample_s: int = 0
    max_rpm: int | None = None
    max_vehicle_speed: float | None = None
    speed_readings: int = 0  # OBD speed readings in the minute: how much the car's "0 km/h" is worth
    ignition: bool | None = None
    vin: str | None = None


def _e6(x: float) -> int:
    return round(x * 1_000_000)


def _dkmh(mps: float) -> int:
    return round(mps * 36)


def _usable(fix: GpsFix) -> bool:
    return fix.valid and fix.time is not None and fix.lat is not None and fix.lon is not None


class TrainingSession:
    """One terminal's session state. Single-threaded: the runtime calls it from one loop."""

    def __init__(
        self,
        terminal: str,
        *,
        recheck_minutes: int = 15,
        has_vehicle_signal: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.terminal = terminal
        self.recheck = timedelta(minutes=recheck_minutes)
        self.has_vehicle_signal = has_vehicle_signal
        self.rng = rng or random.Random()  # noqa: S311 - scheduling jitter, not a secret
        self.state = State.IDLE
        self.coach: str | None = None
        self.student: str | None = None
        self.course: CourseCode | None = None
        self.session_id: str | None = None
        self.minutes_recorded = 0
        self.last_face: dict[str, Any] = {"result": None, "seq": None}
        self._minute: _Minute | None = None
        self._next_check: datetime | None = None
        self._check_pending = False
        self._window_end: datetime | None = None
        self._latest_vehicle: VehicleSample | None = None
        self._odometer = Odometer()
        self.clock_offset_ms: int | None = None

    # --- requests from the coach screen -------------------------------------------------------------------

    def coach_login(self, coach: str, face: FaceOutcome, at: datetime) -> list[Action]:
        self._require(State.IDLE, "coach_already_in", "a coach is already signed in")
        body = {"coach": coach, "face": face.to_body()}
        check = self._face_check_record(coach, "coach", face, "login", at, session=None)
        if face.result != "pass" or face.person != coach:
            return [check]
        self.state, self.coach = State.COACH, coach
        return [check, EmitRecord(RecordKind.COACH_LOGIN, at, body)]

    def student_login(
        self, student: str, course: str, face: FaceOutcome, at: datetime, next_seq: int, chain: int
    ) -> list[Action]:
        self._require(
            State.COACH,
            "no_coach" if self.state is State.IDLE else "student_already_in",
            "a coach must be signed in and no student",
        )
        code = CourseCode.parse(course)
        assert self.coach is not None
        # The face check record comes first (seq next_seq), the login second (seq next_seq + 1): the session id
        # names the login record's place in the chain.
        session_id = f"{self.terminal}-{chain}-{next_seq + 1}"
        check = self._face_check_record(student, "student", face, "login", at, session=session_id)
        if face.result != "pass" or face.person != student:
            return [check]
        self.state, self.student, self.course, self.session_id = State.TRAINING, student, code, session_id
        self.minutes_recorded = 0
        self._minute = _Minute(start=_floor_minute(at))
        self._odometer = Odometer()
        self._schedule_window(at)
        body = {
            "student": student,
            "coach": self.coach,
            "course": str(code),
            "session": session_id,
            "face": face.to_body(),
        }
        return [check, EmitRecord(RecordKind.STUDENT_LOGIN, at, body)]

    def student_logout(self, face: FaceOutcome, at: datetime) -> list[Action]:
        self._require(State.TRAINING, "no_student", "no student is signed in")
        assert self.student is not None and self.session_id is not None
        actions: list[Action] = [self._face_check_record(self.student, "student", face, "logout", at, self.session_id)]
        if self._minute is not None and self._minute.fixes > 0:
            actions.append(self._close_minute(self._minute))
        self._minute = None
        actions.append(
            EmitRecord(
                RecordKind.STUDENT_LOGOUT,
                at,
                {
                    "student": self.student,
                    "coach": self.coach,
                    "session": self.session_id,
                    "minutes": self.minutes_recorded,
                    "face": face.to_body(),
                },
            )
        )
        self.state, self.student, self.course, self.session_id = State.COACH, None, None, None
        self._next_check = self._window_end = None
        self._check_pending = False
        return actions

    def coach_logout(self, face: FaceOutcome, at: datetime) -> list[Action]:
        self._require(
            State.COACH,
            "student_still_in" if self.state is State.TRAINING else "no_coach",
            "the student must sign out first" if self.state is State.TRAINING else "no coach is signed in",
        )
        assert self.coach is not None
        coach = self.coach
        self.state, self.coach = State.IDLE, None
        return [
            self._face_check_record(coach, "coach", face, "logout", at, None),
            EmitRecord(RecordKind.COACH_LOGOUT, at, {"coach": coach, "face": face.to_body()}),
        ]

    # --- the runtime's feedback ---------------------------------------------------------------------------

    def on_appended(self, kind: RecordKind, seq: int, body: dict[str, Any]) -> None:
        """The runtime committed a record: remember the last face check of the session for the minute records."""
        if kind is RecordKind.FACE_CHECK and body.get("role") == "student":
            self.last_face = {"result": body["result"], "seq": seq}
        elif kind is RecordKind.MINUTE:
            self.minutes_recorded += 1

    def face_check_done(self, face: FaceOutcome, at: datetime) -> list[Action]:
        """The result of a :class:`RequestFaceCheck` (a random re-check)."""
        self._check_pending = False
        if self.state is not State.TRAINING or self.student is None:
            return []
        return [self._face_check_record(self.student, "student", face, "random", at, self.session_id)]

    # --- time and sensors ---------------------------------------------------------------------------------

    def on_vehicle(self, sample: VehicleSample) -> None:
        self._latest_vehicle = sample
        m = self._minute
        if m is None:
            return
        m.max_rpm = max(m.max_rpm or 0, sample.rpm)
        if sample.speed_kmh is not None:
            m.max_vehicle_speed = max(m.max_vehicle_speed or 0.0, sample.speed_kmh)
            m.speed_readings += 1
        m.ignition = bool(m.ignition) or sample.ignition
        m.vin = sample.vin or m.vin

    def on_fix(self, fix: GpsFix) -> list[Action]:
        if self.state is not State.TRAINING or not _usable(fix):
            return []
        assert fix.time is not None and fix.lat is not None and fix.lon is not None
        actions = self._advance_to(fix.time)
        m = self._minute
        if m is None or fix.time < m.start:
            return actions  # a fix from before the session's first minute
        second = int((fix.time - m.start).total_seconds())
        speed = fix.speed_mps or 0.0
        step = self._odometer.feed(fix)  # a jump faster than any car (teleport, spoofing) is marked, not added
        m.distance_m += step.metres
        m.jumps += step.jump
        m.fixes += 1
        m.max_speed_mps = max(m.max_speed_mps, speed if speed <= MAX_PLAUSIBLE_SPEED_MPS else 0.0)
        if m.fix30 is None or abs(second - 30) < abs(_second_of(m.fix30, m.start) - 30):
            m.fix30 = fix
        if second >= m.next_sample_s:
            m.samples.append([second, _e6(fix.lat), _e6(fix.lon), _dkmh(speed)])
            m.next_sample_s = (second // SAMPLE_EVERY_S + 1) * SAMPLE_EVERY_S
        return actions + self._due_check(fix.time)

    def note_clock_offset(self, offset_ms: int | None) -> None:
        """The runtime's latest measure of terminal clock minus GNSS time; it goes into the minute record."""
        self.clock_offset_ms = offset_ms

    def on_tick(self, now: datetime) -> list[Action]:
        """Terminal clock tick: closes minutes that got no fix (GPS lost) so that none is silently missing."""
        if self.state is not State.TRAINING or self._minute is None:
            return []
        actions: list[Action] = []
        while self._minute is not None and now >= self._minute.start + timedelta(minutes=1) + MINUTE_CLOSE_GRACE:
            actions.append(self._close_minute(self._minute))
            self._minute = _Minute(start=self._minute.start + timedelta(minutes=1))
        return actions + self._due_check(now)

    # --- internals ----------------------------------------------------------------------------------------

    def _require(self, state: State, reason: str, message: str) -> None:
        if self.state is not state:
            raise SessionRefused(reason, message)

    def _advance_to(self, t: datetime) -> list[Action]:
        actions: list[Action] = []
        target = _floor_minute(t)
        while self._minute is not None and self._minute.start < target:
            actions.append(self._close_minute(self._minute))
            self._minute = _Minute(start=self._minute.start + timedelta(minutes=1))
        return actions

    def _close_minute(self, m: _Minute) -> EmitRecord:
        assert self.student is not None and self.coach is not None and self.course is not None
        fix30: dict[str, Any] | None = None
        f = m.fix30
        if f is not None and f.lat is not None and f.lon is not None and f.time is not None:
            fix30 = {
                "lat": _e6(f.lat),
                "lon": _e6(f.lon),
                "mode": f.mode,
                "sats": f.satellites,
                "hdop": None if f.hdop is None else round(f.hdop * 10),
                "speed": _dkmh(f.speed_mps or 0.0),
                "course": round(f.track_deg or 0.0) % 360,
                "t": format_time(f.time),
            }
        vehicle: dict[str, Any] | None = None
        if self.has_vehicle_signal and m.max_rpm is not None:
            vehicle = {
                "rpm": m.max_rpm,
                "speed": None if m.max_vehicle_speed is None else round(m.max_vehicle_speed * 10),
                "speed_readings": m.speed_readings,
                "ignition": bool(m.ignition),
            }
            if m.vin is not None:  # optional (contract): absent when the car gives no VIN
                vehicle["vin"] = m.vin
        body = {
            "student": self.student,
            "coach": self.coach,
            "course": str(self.course),
            "session": self.session_id,
            "max_speed": _dkmh(m.max_speed_mps),
            "distance_m": round(m.distance_m),
            "fix_count": m.fixes,
            "fix30": fix30,
            "fixes": m.samples,
            "vehicle": vehicle,
            "face": dict(self.last_face),
            "gnss": {"jumps": m.jumps, "clock_offset_ms": self.clock_offset_ms},
        }
        return EmitRecord(RecordKind.MINUTE, m.start, body, needs_record_no=True)

    def _face_check_record(
        self, person: str, role: str, face: FaceOutcome, trigger: str, at: datetime, session: str | None
    ) -> EmitRecord:
        result = face.result if face.result != "pass" or face.person == person else "fail"
        face_body = face.to_body()
        body = {
            "person": person,
            "role": role,
            "result": result,
            "session": session,
            "trigger": trigger,
            "distance": None if face.distance is None else round(face.distance * 1000),
            "seen": face.person,
            # Liveness figures (challenge, verdict, measures) when the checker measured them.
            "liveness": face_body.get("liveness"),
        }
        if face_body.get("photo") is not None:
            body["photo"] = face_body["photo"]  # SHA-256 of the evidence JPEG: the chain vouches for the photo
        return EmitRecord(RecordKind.FACE_CHECK, at, body)

    def _schedule_window(self, start: datetime) -> None:
        self._window_end = start + self.recheck
        self._next_check = start + timedelta(seconds=self.rng.uniform(0.2, 0.9) * self.recheck.total_seconds())

    def _due_check(self, now: datetime) -> list[Action]:
        if self.student is None or self._window_end is None:
            return []
        actions: list[Action] = []
        if not self._check_pending and self._next_check is not None and now >= self._next_check:
            self._check_pending = True
            self._next_check = None
            actions.append(RequestFaceCheck(self.student, "student", "random"))
        while now >= self._window_end:  # a new window: one check at a random moment inside it
            window_start = self._window_end
            self._window_end = window_start + self.recheck
            jitter = self.rng.uniform(0.0, 0.9) * self.recheck.total_seconds()
            self._next_check = window_start + timedelta(seconds=jitter)
        return actions


def _floor_minute(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


def _second_of(fix: GpsFix, start: datetime) -> int:
    assert fix.time is not None
    return int((fix.time - start).total_seconds())
