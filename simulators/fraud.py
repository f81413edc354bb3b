"""Fraud scenarios: signed record streams for each trick of ``domain.md`` "How hours get faked", and a clean fleet.

Each scenario is a :class:`Scenario`: the people and terminals to enrol, and :class:`Upload` s (a terminal's signed
record and the moment the server receives it). The records are built and signed as a terminal does (contract v1,
Ed25519, chained), so the server sees nothing that tells a simulated fraud from a real one: only the evidence.

=========================  ==================================================================================
``clean_fleet``            cars training honestly in the teaching area, one of them uploading hours late (backfill)
``teleport``               one minute's second-30 fix 5 km away from the track (GPS spoofing)
``parked``                 "hanging hours": engine idling, car parked for the whole session
``overlapping_student``    one student signed in on two cars at the same time (a shared card)
``overlapping_coach``      one coach signed in on two cars at the same time
``clock_set_back``         the terminal clock set back one hour so that evening training looks inside the window
``backdated_backfill``     after a morning session, a session dated the previous evening (across midnight) is added
``emulator_track``         a "running horse" box replays a real session's recorded track, an hour later on the same
                           terminal and the next day on another car, while the car idles (OBD: 800 rpm, 0 km/h)
=========================  ==================================================================================

Every position a terminal records carries receiver noise (Gaussian, :data:`RECEIVER_NOISE_M`, drawn from the terminal
and the time), as a real receiver's do: two honest drives never repeat positions to the micro-degree, only a replay
does.

simulators import no agent or server code (import-linter); the server's rules are what the tests check against.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_protocols import envelope
from firmware_protocols.identifiers import beijing_day
from firmware_protocols.records import GENESIS_PREV, RecordKind, build_payload, format_time, record_hash, sign_record

#: The school of every scenario, its teaching area (a square around the training ground) for parts 2 and 3.
SCHOOL = "3711020000000009"
GROUND = (35.4200, 119.5200)
#: The teaching area around ``GROUND``: (lat, lon) corners, for a policy's ``[[teaching_areas]]``.
TEACHING_AREA = ((35.4150, 119.5150), (35.4150, 119.5250), (35.4250, 119.5250), (35.4250, 119.5150))
COURSE = "1212130000"  # practical, C1, part 2, item 13
#: Training speed and the loop driven: 15 km/h on a 100 m-radius circle around GROUND.
SPEED_DKMH = 150
LOOP_RADIUS_M = 100.0
M_PER_DEG_LAT = 111_195.0
#: 08:00 Beijing time on the first scenario day.
DAY0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
#: Standard deviation (metres, north and east) of a receiver's position noise.
RECEIVER_NOISE_M = 1.2
#: Minutes of a session and the face re-check schedule (one in each 15-minute window).
SESSION_MINUTES = 40
RECHECK_AT = (10, 25)


def person(kind: str, n: int) -> str:
    """16-character national number: ``P`` students, ``C`` coaches, ``T`` terminals, school digits, ``n``."""
    return f"{kind}37110200{n:07d}"


@dataclass(frozen=True)
class Upload:
    terminal: str
    raw: bytes
    arrive_at: datetime


@dataclass
class Scenario:
    name: str
    expected: str | None  # the reason code that must catch it (None: the clean fleet, nothing may be caught)
    terminals: dict[str, str] = field(default_factory=dict)  # terminal → public key PEM
    students: list[str] = field(default_factory=list)
    coaches: list[str] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    suspects: set[str] = field(default_factory=set)  # record numbers of the minutes that must be caught


@dataclass
class FleetTerminal:
    """A terminal's signing side: chain, seq, prev and the daily sequence of record numbers."""

    id: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    chain: int = 1
    seq: int = 0
    prev: str = GENESIS_PREV
    daily: dict[str, int] = field(default_factory=dict)

    @property
    def public_pem(self) -> str:
        return envelope.public_key_to_pem(self.key.public_key())

    def record(self, kind: RecordKind, body: dict[str, Any], at: datetime) -> bytes:
        raw = sign_record(build_payload(kind, self.id, self.chain, self.seq, self.prev, at, body), self.key)
        self.seq += 1
        self.prev = record_hash(raw)
        return raw

    def genesis(self, at: datetime) -> bytes:
        return self.record(RecordKind.GENESIS, {"public_key": self.public_pem, "reason": "first_start",
                                                "previous_chain": None}, at)  # fmt: skip

    def record_no(self, at: datetime) -> str:
        day = f"{beijing_day(at):%y%m%d}"
        self.daily[day] = self.daily.get(day, 0) + 1
        return f"{self.id}{day}{self.daily[day]:04d}"


#: A position of the car at a time: (lat, lon, speed 0.1 km/h).
Track = Callable[[int, int], tuple[float, float, int]]


def loop_track(phase: float = 0.0) -> Track:
    """The car on the 100 m loop at 15 km/h: ``track(minute, second)``."""

    def at(minute: int, second: int) -> tuple[float, float, int]:
        metres = (minute * 60 + second) * SPEED_DKMH / 36
        angle = phase + metres / LOOP_RADIUS_M
        lat = GROUND[0] + LOOP_RADIUS_M * math.sin(angle) / M_PER_DEG_LAT
        lon = GROUND[1] + LOOP_RADIUS_M * math.cos(angle) / (M_PER_DEG_LAT * math.cos(math.radians(GROUND[0])))
        return lat, lon, SPEED_DKMH

    return at


def parked_track() -> Track:
    return lambda _m, _s: (GROUND[0], GROUND[1], 0)


@dataclass
class SessionPlan:
    """One training session as a terminal records it."""

    terminal: FleetTerminal
    student: str
    coach: str
    start: datetime  # the time the terminal believes (GNSS time unless the clock is set back)
    minutes: int = SESSION_MINUTES
    track: Track = field(default_factory=loop_track)
    gnss_offset: timedelta = timedelta(0)  # true GNSS time minus the terminal's time (clock set back: > 0)
    rpm: int = 1500
    distance_m: int | None = None  # per minute; None: what the track covers
    fix_override: dict[int, tuple[float, float]] = field(default_factory=dict)  # minute → forged fix30 (lat, lon)
    session_id: str = ""
    noise_m: float = RECEIVER_NOISE_M  # receiver noise added to the track (0: the track as it is, e.g. a replay)
    vehicle_speed: int | None = None  # what OBD says, 0.1 km/h (None: the track's speed)
    vin: str | None = None  # the car's VIN in ``vehicle.vin`` (None: the field is left out, as before)


def observed(plan: SessionPlan, minute: int, second: int) -> tuple[float, float, int]:
    """Where the plan's receiver puts the car: the track plus noise drawn from the terminal and the time."""
    lat, lon, speed = plan.track(minute, second)
    if plan.noise_m > 0:
        rng = random.Random(f"{plan.terminal.id}|{format_time(plan.start + timedelta(minutes=minute, seconds=second))}")
        lat += rng.gauss(0, plan.noise_m) / M_PER_DEG_LAT
        lon += rng.gauss(0, plan.noise_m) / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    return lat, lon, speed


def replayed_track(original: SessionPlan) -> Track:
    """What a "running horse" box feeds the terminal: the positions ``original``'s receiver recorded, minute by
    minute (use with ``noise_m=0``: the box adds none)."""
    return lambda minute, second: observed(original, minute, second)


def record_session(plan: SessionPlan) -> tuple[list[bytes], list[str]]:
    """Coach login, student login, minutes, face re-checks, student and coach logout: (records, record numbers)."""
    t, out, numbers = plan.terminal, [], []
    login_at = plan.start
    out.append(t.record(RecordKind.FACE_CHECK, _face(plan.coach, "coach", None, "login"), login_at))
    out.append(t.record(RecordKind.COACH_LOGIN, {"coach": plan.coach, "face": {"result": "pass", "distance": 310}},
                        login_at))  # fmt: skip
    session = plan.session_id or f"{t.id}-{t.chain}-{t.seq + 1}"
    out.append(t.record(RecordKind.FACE_CHECK, _face(plan.student, "student", session, "login"), login_at))
    face_seq = t.seq - 1
    out.append(t.record(RecordKind.STUDENT_LOGIN, {"student": plan.student, "coach": plan.coach, "course": COURSE,
                                                   "session": session, "face": {"result": "pass", "seq": face_seq}},
                        login_at))  # fmt: skip
    for i in range(plan.minutes):
        start = plan.start + timedelta(minutes=i)
        if i in RECHECK_AT:
            out.append(t.record(RecordKind.FACE_CHECK, _face(plan.student, "student", session, "random"), start))
            face_seq = t.seq - 1
        raw, number = _minute(plan, i, start, session, face_seq)
        out.append(raw)
        numbers.append(number)
    end = plan.start + timedelta(minutes=plan.minutes)
    out.append(t.record(RecordKind.FACE_CHECK, _face(plan.student, "student", session, "logout"), end))
    out.append(t.record(RecordKind.STUDENT_LOGOUT, {"student": plan.student, "coach": plan.coach, "session": session,
                                                    "minutes": plan.minutes, "face": {"result": "pass"}},
                        end))  # fmt: skip
    out.append(t.record(RecordKind.FACE_CHECK, _face(plan.coach, "coach", None, "logout"), end))
    out.append(t.record(RecordKind.COACH_LOGOUT, {"coach": plan.coach, "face": {"result": "pass"}}, end))
    return out, numbers


def _face(who: str, role: str, session: str | None, trigger: str) -> dict[str, Any]:
    return {"person": who, "role": role, "result": "pass", "session": session, "trigger": trigger, "distance": 320,
            "seen": who}  # fmt: skip


def _minute(plan: SessionPlan, i: int, start: datetime, session: str, face_seq: int) -> tuple[bytes, str]:
    lat, lon, speed = observed(plan, i, 30)
    if i in plan.fix_override:
        lat, lon = plan.fix_override[i]
    samples = []
    for second in range(0, 60, 10):
        s_lat, s_lon, s_speed = observed(plan, i, second)
        samples.append([second, round(s_lat * 1e6), round(s_lon * 1e6), s_speed])
    distance = plan.distance_m if plan.distance_m is not None else round(speed * 60 / 36)
    number = plan.terminal.record_no(start)
    body = {
        "record_no": number,
        "student": plan.student,
        "coach": plan.coach,
        "course": COURSE,
        "session": session,
        "max_speed": speed + 20 if speed else 0,
        "distance_m": distance,
        "fix_count": 60,
        "fix30": {"lat": round(lat * 1e6), "lon": round(lon * 1e6), "mode": 3, "sats": 10, "hdop": 8, "speed": speed,
                  "course": 90, "t": format_time(start + timedelta(seconds=30) + plan.gnss_offset)},
        "fixes": samples,
        "vehicle": {"rpm": plan.rpm, "speed": speed if plan.vehicle_speed is None else plan.vehicle_speed,
                    "speed_readings": 120,  # the agent polls OBD every 0.5 s
                    "ignition": True, **({"vin": plan.vin} if plan.vin else {})},
        "face": {"result": "pass", "seq": face_seq},
        "gnss": {"jumps": 0, "clock_offset_ms": 0},
    }  # fmt: skip
    return plan.terminal.record(RecordKind.MINUTE, body, start), number


class _Builder:
    """Numbers people and terminals of one scenario and collects its uploads."""

    def __init__(self, name: str, expected: str | None, base: int) -> None:
        self.scenario = Scenario(name, expected)
        self._base = base
        self._next = {"P": 0, "C": 0, "T": 0}

    def new(self, kind: str) -> str:
        self._next[kind] += 1
        number = person(kind, self._base + self._next[kind])
        (self.scenario.students if kind == "P" else self.scenario.coaches if kind == "C" else []).append(number)
        return number

    def terminal(self, at: datetime) -> FleetTerminal:
        t = FleetTerminal(self.new("T"))
        self.scenario.terminals[t.id] = t.public_pem
        self.upload(t, [t.genesis(at)], at)
        return t

    def upload(self, t: FleetTerminal, records: list[bytes], arrive_at: datetime) -> None:
        self.scenario.uploads += [Upload(t.id, raw, arrive_at) for raw in records]

    def session(self, plan: SessionPlan, *, arrive_at: datetime | None = None, suspect: bool = False) -> list[str]:
        records, numbers = record_session(plan)
        live = arrive_at is None
        for i, raw in enumerate(records):  # live: each record arrives a few seconds after its minute
            when = (plan.start + plan.gnss_offset + timedelta(minutes=min(i, plan.minutes), seconds=65)) if live \
                else arrive_at  # fmt: skip
            assert when is not None
            self.upload(plan.terminal, [raw], when)
        if suspect:
            self.scenario.suspects.update(numbers)
        return numbers


def _morning(day: int = 0, hour: int = 8) -> datetime:
    """``hour``:00 Beijing time on scenario day ``day``."""
    return DAY0 + timedelta(days=day, hours=hour - 8)


def clean_fleet(cars: int = 4) -> Scenario:
    """Honest cars: two sessions a day each, own student and coach; the last car uploads its afternoon hours late."""
    b = _Builder("clean_fleet", None, 100)
    for c in range(cars):
        t = b.terminal(_morning() - timedelta(minutes=5))
        student, coach = b.new("P"), b.new("C")
        b.session(SessionPlan(t, student, coach, _morning(hour=8), track=loop_track(c)))
        late = _morning(hour=17) if c == cars - 1 else None  # offline all afternoon, then backfilled at once
        b.session(SessionPlan(t, student, coach, _morning(hour=14), track=loop_track(c + 0.5)), arrive_at=late)
    return b.scenario


def teleport() -> Scenario:
    b = _Builder("teleport", "teleport", 200)
    t = b.terminal(_morning() - timedelta(minutes=5))
    jump = (GROUND[0] + 0.045, GROUND[1])  # 5 km north, outside the area as well
    numbers = b.session(SessionPlan(t, b.new("P"), b.new("C"), _morning(), fix_override={20: jump}))
    b.scenario.suspects.add(numbers[20])
    return b.scenario


def parked() -> Scenario:
    b = _Builder("parked", "stationary", 300)
    t = b.terminal(_morning() - timedelta(minutes=5))
    b.session(SessionPlan(t, b.new("P"), b.new("C"), _morning(), track=parked_track(), rpm=800, distance_m=0),
              suspect=True)  # fmt: skip
    return b.scenario


def overlapping_student() -> Scenario:
    b = _Builder("overlapping_student", "student_overlap", 400)
    t1, t2 = b.terminal(_morning() - timedelta(minutes=5)), b.terminal(_morning() - timedelta(minutes=5))
    student = b.new("P")
    b.session(SessionPlan(t1, student, b.new("C"), _morning()), suspect=True)
    b.session(SessionPlan(t2, student, b.new("C"), _morning(), track=loop_track(2.0)), suspect=True)
    return b.scenario


def overlapping_coach() -> Scenario:
    b = _Builder("overlapping_coach", "coach_overlap", 500)
    t1, t2 = b.terminal(_morning() - timedelta(minutes=5)), b.terminal(_morning() - timedelta(minutes=5))
    coach = b.new("C")
    first = b.session(SessionPlan(t1, b.new("P"), coach, _morning()))
    second = b.session(SessionPlan(t2, b.new("P"), coach, _morning() + timedelta(minutes=20), track=loop_track(2.0)))
    b.scenario.suspects.update(first[20:] + second[:20])  # the 20 minutes the coach was in both cars
    return b.scenario


def clock_set_back() -> Scenario:
    """Training really at 20:50–21:30 Beijing; the terminal's clock, one hour behind, dates it 19:50–20:30."""
    b = _Builder("clock_set_back", "gnss_time_mismatch", 600)
    t = b.terminal(_morning() - timedelta(minutes=5))
    b.session(SessionPlan(t, b.new("P"), b.new("C"), _morning(hour=19) + timedelta(minutes=50),
                          gnss_offset=timedelta(hours=1)), suspect=True)  # fmt: skip
    return b.scenario


def backdated_backfill() -> Scenario:
    """Day 1: a real morning session. Then, in the same chain, a session dated 19:00 the evening before (across
    midnight into day 0, whose cap was unused), its record numbers and GNSS times forged to match."""
    b = _Builder("backdated_backfill", "time_backwards", 700)
    t = b.terminal(_morning(day=1) - timedelta(minutes=5))
    student, coach = b.new("P"), b.new("C")
    b.session(SessionPlan(t, student, coach, _morning(day=1)))
    b.session(SessionPlan(t, student, coach, _morning(day=0, hour=19)), arrive_at=_morning(day=1, hour=9),
              suspect=True)  # fmt: skip
    return b.scenario


def emulator_track() -> Scenario:
    """Day 0, 08:00: a real session. 09:00 on the same car, and day 1 08:00 on another car of the school: the car
    stands idling in the yard (OBD: 800 rpm, 0 km/h) while a "running horse" box feeds the terminal the positions
    recorded at 08:00, so distance and GNSS speed look driven. The real session stays valid; the copies are caught."""
    b = _Builder("emulator_track", "replayed_track", 800)
    t1 = b.terminal(_morning() - timedelta(minutes=5))
    t2 = b.terminal(_morning(day=1) - timedelta(minutes=5))
    real = SessionPlan(t1, b.new("P"), b.new("C"), _morning(), track=loop_track(1.0))
    b.session(real)
    for t, start in ((t1, _morning(hour=9)), (t2, _morning(day=1))):
        b.session(SessionPlan(t, b.new("P"), b.new("C"), start, track=replayed_track(real), noise_m=0, rpm=800,
                              vehicle_speed=0), suspect=True)  # fmt: skip
    return b.scenario


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "teleport": teleport,
    "parked": parked,
    "overlapping_student": overlapping_student,
    "overlapping_coach": overlapping_coach,
    "clock_set_back": clock_set_back,
    "backdated_backfill": backdated_backfill,
    "emulator_track": emulator_track,
}
