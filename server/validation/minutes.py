"""The minute audit: pure, deterministic rules that judge each minute record valid or invalid, with reasons.

Rules (``domain.md`` "Minute audit"; thresholds come from the :class:`~server.policy.Policy`):

=====================  ====================================================================================
``no_fix``             the second-30 fix is missing or has mode < 2 (no 2D/3D fix), or fewer than
                       ``policy.min_fixes_per_minute`` valid fixes were seen in the minute
``outside_time_window``  practical course (mode 1) and the Beijing time of the minute start is outside
                       ``policy.practical_window`` (start inclusive, end exclusive)
``engine_off``         ``rpm == 0`` (``rpm is None`` means the car gives no signal: the rule is not applied)
``stationary``         within one session, the minute is part of a run of ≥ ``policy.stationary_limit_minutes``
                       consecutive minutes (starts exactly 60 s apart) each with max speed 0, or a run each with
                       distance 0: every minute of the run is invalid
``face_failed``        the last face check of the session before this minute failed (``face_result == "fail"``)
``bad_course``         the course code does not parse (ingest should have refused it already)
``outside_teaching_area``  practical course, and the policy names teaching areas for the terminal's school and the
                       course's part, and the second-30 fix lies in none of them
``gnss_time_mismatch`` the second-30 fix's GNSS time (``fix30.t``) is more than ``policy.gnss_time_tolerance_s``
                       from second 30 of the minute: the terminal's clock (which dates the record) was changed
``record_date_mismatch``  the ``YYMMDD`` of the record number is not the Beijing date of the minute's start
``time_in_future``     the minute ended more than ``policy.max_future_s`` after the server received it
``backfill_too_late``  the server received the minute more than ``policy.backfill_window_hours`` after it
``coach_not_licensed`` the coach is not registered (``coach_classes == ()``) or not licensed for the course's class
``foreign_school``     the student's or the coach's school is not the terminal's school
``speed_mismatch``     GNSS says the car drove through a whole minute (max and second-30 speed ≥
                       :data:`SPEED_MISMATCH_GNSS_DKMH`, distance ≥ :data:`SPEED_MISMATCH_DISTANCE_M`, fixes ≥
                       :data:`SPEED_MISMATCH_MIN_FIXES`) while the car's own OBD speed stayed 0 in at least
                       :data:`SPEED_MISMATCH_MIN_READINGS` readings with the engine
                       reporting: the positions come from somewhere else (an emulator box, a spoofer). Not applied
                       when the car reports no speed or no signal at all
``foreign_car``        the car reported a VIN (``vehicle.vin``) and it is not the VIN the terminal is bound to
                       (``vin is None``: the car gives none; ``bound_vin is None``: not bound; either way not applied)
=====================  ====================================================================================

Facts that are ``None`` (unknown: no school, no arrival time, no ``fix30.t``, coach not looked up) leave their rule
unapplied. Rules that need the rest of the session (teleport, face re-checks, photo windows, session totals) and other
terminals (overlaps, backdating) are in :mod:`server.validation.session` and :mod:`server.validation.cross`.

The verdicts depend only on the multiset of minutes, never on their order: :func:`judge_minutes` sorts internally and
the stationary rule works on sets of start times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from operator import attrgetter

from firmware_protocols.errors import MalformedMessage
from firmware_protocols.identifiers import BEIJING, CourseCode
from server.policy import Policy
from server.validation.geo import PreparedPolygon, inside_prepared, prepare_polygon
from server.validation.reasons import Reason

#: Two minutes are consecutive when their starts are exactly this far apart (minute starts are whole GNSS minutes).
MINUTE = timedelta(seconds=60)
#: The lowest GNSS fix mode that gives a position (NMEA/gpsd: 1 no fix, 2 2D, 3 3D).
MIN_FIX_MODE = 2
#: The course-code mode of practical (on-road / field) training: the only one bound to the time window.
PRACTICAL_MODE = 1
#: ``MinuteFacts.face_result`` value of a failed face check (``firmware_protocols.records.FaceResult.FAIL``).
FACE_FAIL = "fail"
#: The second of the minute at which ``fix30`` is taken.
FIX30_OFFSET = timedelta(seconds=30)
#: ``speed_mismatch``: GNSS speeds from this (0.1 km/h: 10 km/h, well above a parked receiver's noise), at second 30
#: as well as at the minute's highest, over at least this many metres, in a minute of at least this many fixes, while
#: the car's wheels (OBD speed) never turned. OBD and GNSS speeds of a moving car differ by a few per cent; a car at
#: 0 km/h through a whole minute of GNSS driving is not a measuring difference. Partial minutes (sign-in, sign-out,
#: where the car starts and stops) are left out: OBD is polled, and a few polls may all fall on a standstill.
SPEED_MISMATCH_GNSS_DKMH = 100
SPEED_MISMATCH_DISTANCE_M = 50
SPEED_MISMATCH_MIN_FIXES = 45
#: … and only when the car's speed was read at least this often in the minute (every 6 s): "0 km/h" from one or two
#: polls that fell on a stop is no evidence (the demo at 60× time polls twice a simulated minute).
SPEED_MISMATCH_MIN_READINGS = 10


# Facts are read-only by convention but not frozen: a frozen dataclass's __init__ sets each field through
# object.__setattr__, which made building the facts of one minute ~3x dearer (they are built for every minute
# re-judged). Hashable as before.
@dataclass(slots=True, unsafe_hash=True)
class Fix30:
    """The fix taken at second 30 of the minute."""

    lat_e6: int
    lon_e6: int
    mode: int
    satellites: int | None
    hdop10: int | None
    speed_dkmh: int


@dataclass(slots=True, unsafe_hash=True)
class MinuteFacts:
    """What the audit needs to know of one minute record (taken from a verified record's body)."""

    record_no: str
    terminal: str
    student: str
    coach: str
    course: str
    session: str
    start: datetime  # aware UTC, minute start (GNSS time)
    max_speed_dkmh: int  # 0.1 km/h
    distance_m: int
    fix_count: int  # valid fixes seen in the minute
    fix30: Fix30 | None  # the second-30 fix
    rpm: int | None  # None = no vehicle signal: the rpm rule is not applied
    face_result: str | None  # last face check of the session: "pass" | "fail" | ... | None
    fix30_time: datetime | None = None  # GNSS time of the second-30 fix (fix30.t), aware UTC
    received_at: datetime | None = None  # when the server stored the record
    school: str | None = None  # the terminal's school
    student_school: str | None = None
    coach_school: str | None = None
    coach_classes: tuple[str, ...] | None = None  # licence classes the coach may teach; () = coach not registered
    vin: str | None = None  # the VIN the car reported in this minute (None: the car gives none)
    bound_vin: str | None = None  # the VIN of the car the terminal is bound to (None: not bound)
    vehicle_speed_dkmh: int | None = None  # the car's own (OBD) highest speed in the minute (None: not reported)
    speed_readings: int | None = None  # how many OBD speed readings that highest speed is of (None: not said)


@dataclass(frozen=True, slots=True)
class Verdict:
    record_no: str
    valid: bool
    reasons: tuple[str, ...]  # sorted, empty when valid


def judge_minutes(minutes: Sequence[MinuteFacts], policy: Policy) -> list[Verdict]:
    """Judge every minute; one verdict per input minute, ordered by (start, record number).

    Minutes of several sessions may be mixed: the stationary rule only links minutes of the same session.
    """
    return [Verdict(m.record_no, not codes, codes) for m, codes in judged_minutes(minutes, policy)]


def judged_minutes(minutes: Sequence[MinuteFacts], policy: Policy) -> list[tuple[MinuteFacts, tuple[str, ...]]]:
    """:func:`judge_minutes` as (minute, sorted reason codes) pairs, in the verdicts' order (for the session audit).

    One pass over the minutes with the policy's figures looked up once: times of day and Beijing days by integer
    arithmetic on the minute's offset from the epoch, course codes parsed once per distinct code, teaching areas
    prepared once per (school, part).
    """
    for m in minutes:
        if m.start.tzinfo is None:
            raise ValueError(f"minute {m.record_no}: start must be an aware datetime")
    ordered = _ordered(minutes)
    limit = policy.stationary_limit_minutes
    still_speed: dict[str, set[datetime]] = {}
    still_distance: dict[str, set[datetime]] = {}
    for m in ordered:
        if m.max_speed_dkmh == 0:
            still_speed.setdefault(m.session, set()).add(m.start)
        if m.distance_m == 0:
            still_distance.setdefault(m.session, set()).add(m.start)
    zero_speed = _in_long_runs(still_speed, limit) if still_speed else set()
    zero_distance = _in_long_runs(still_distance, limit) if still_distance else set()

    min_fixes = policy.min_fixes_per_minute
    window = _window_us(policy)
    areas: dict[tuple[str, int], tuple[PreparedPolygon, ...]] = {}
    tolerance = policy.gnss_time_tolerance_s
    max_future = policy.max_future_s
    backfill = timedelta(hours=policy.backfill_window_hours)
    stamps: dict[int, str] = {}  # Beijing day number -> YYMMDD
    out: list[tuple[MinuteFacts, tuple[str, ...]]] = []
    for m in ordered:
        codes: list[str] = []
        start = m.start
        fix30 = m.fix30
        if fix30 is None or fix30.mode < MIN_FIX_MODE or m.fix_count < min_fixes:
            codes.append(_NO_FIX)
        # the Beijing wall clock of the start, exact: whole seconds since the epoch, then Beijing's fixed offset
        since_epoch = start - _EPOCH
        local = since_epoch.days * _DAY_S + since_epoch.seconds + _BEIJING_S
        day = local // _DAY_S
        course = _course(m.course)
        if course is None:
            codes.append(_BAD_COURSE)
        else:
            mode, part, licence_class = course
            if mode == PRACTICAL_MODE:
                if window is None:
                    inside_window = policy.in_practical_window(start)
                else:
                    of_day = (local - day * _DAY_S) * 1_000_000 + since_epoch.microseconds
                    w_start, w_end = window
                    if w_start <= w_end:
                        inside_window = w_start <= of_day < w_end
                    else:  # a window that runs over midnight
                        inside_window = of_day >= w_start or of_day < w_end
                if not inside_window:
                    codes.append(_OUTSIDE_TIME_WINDOW)
                school = m.school
                if school is not None and fix30 is not None:
                    key = (school, part)
                    polygons = areas.get(key)
                    if polygons is None:
                        polygons = areas[key] = tuple(prepare_polygon(a.polygon) for a in policy.areas_for(*key))
                    lat, lon = fix30.lat_e6 / 1e6, fix30.lon_e6 / 1e6
                    if polygons and not any(inside_prepared(lat, lon, p) for p in polygons):
                        codes.append(_OUTSIDE_TEACHING_AREA)
            if m.coach_classes is not None and licence_class not in m.coach_classes:
                codes.append(_COACH_NOT_LICENSED)
        if m.rpm is not None and m.rpm == 0:
            codes.append(_ENGINE_OFF)
        if m.face_result == FACE_FAIL:
            codes.append(_FACE_FAILED)
        if m.fix30_time is not None:
            if abs((m.fix30_time - (start + FIX30_OFFSET)).total_seconds()) > tolerance:
                codes.append(_GNSS_TIME_MISMATCH)
        stamp = stamps.get(day)
        if stamp is None:
            d = date.fromordinal(_EPOCH_ORDINAL + day)
            stamp = stamps[day] = f"{d.year % 100:02d}{d.month:02d}{d.day:02d}"
        if m.record_no[16:22] != stamp:
            codes.append(_RECORD_DATE_MISMATCH)
        received_at = m.received_at
        if received_at is not None:
            if (start + MINUTE - received_at).total_seconds() > max_future:
                codes.append(_TIME_IN_FUTURE)
            if received_at - start > backfill:
                codes.append(_BACKFILL_TOO_LATE)
        school = m.school
        if school is not None and (
            (m.student_school is not None and m.student_school != school)
            or (m.coach_school is not None and m.coach_school != school)
        ):
            codes.append(_FOREIGN_SCHOOL)
        if m.vin is not None and m.bound_vin is not None and m.vin != m.bound_vin:
            codes.append(_FOREIGN_CAR)
        if (m.vehicle_speed_dkmh == 0 and m.rpm is not None and m.max_speed_dkmh >= SPEED_MISMATCH_GNSS_DKMH
                and fix30 is not None and fix30.speed_dkmh >= SPEED_MISMATCH_GNSS_DKMH
                and m.distance_m >= SPEED_MISMATCH_DISTANCE_M and m.fix_count >= SPEED_MISMATCH_MIN_FIXES
                and (m.speed_readings or 0) >= SPEED_MISMATCH_MIN_READINGS):  # fmt: skip
            codes.append(_SPEED_MISMATCH)
        if (m.max_speed_dkmh == 0 and (m.session, start) in zero_speed) or (
            m.distance_m == 0 and (m.session, start) in zero_distance
        ):
            codes.append(_STATIONARY)
        if codes:
            codes.sort()
            out.append((m, tuple(codes)))
        else:
            out.append((m, ()))
    return out


#: Reason codes as plain strings (what a verdict carries).
_NO_FIX = str(Reason.NO_FIX)
_BAD_COURSE = str(Reason.BAD_COURSE)
_OUTSIDE_TIME_WINDOW = str(Reason.OUTSIDE_TIME_WINDOW)
_OUTSIDE_TEACHING_AREA = str(Reason.OUTSIDE_TEACHING_AREA)
_COACH_NOT_LICENSED = str(Reason.COACH_NOT_LICENSED)
_ENGINE_OFF = str(Reason.ENGINE_OFF)
_FACE_FAILED = str(Reason.FACE_FAILED)
_GNSS_TIME_MISMATCH = str(Reason.GNSS_TIME_MISMATCH)
_RECORD_DATE_MISMATCH = str(Reason.RECORD_DATE_MISMATCH)
_TIME_IN_FUTURE = str(Reason.TIME_IN_FUTURE)
_BACKFILL_TOO_LATE = str(Reason.BACKFILL_TOO_LATE)
_FOREIGN_SCHOOL = str(Reason.FOREIGN_SCHOOL)
_FOREIGN_CAR = str(Reason.FOREIGN_CAR)
_SPEED_MISMATCH = str(Reason.SPEED_MISMATCH)
_STATIONARY = str(Reason.STATIONARY)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_DAY_S = 86_400
#: Beijing's offset from UTC in whole seconds (no DST since 1991).
_BEIJING_S = (BEIJING.utcoffset(None) or timedelta()) // timedelta(seconds=1)


_BY_START = attrgetter("start", "record_no", "session")


def _ordered(minutes: Sequence[MinuteFacts]) -> list[MinuteFacts]:
    """The minutes by (start, record number, session); the repr breaks the remaining ties (rare: built only then)."""
    ordered = sorted(minutes, key=_BY_START)
    for a, b in pairwise(ordered):
        if a.start == b.start and a.record_no == b.record_no and a.session == b.session:
            return sorted(minutes, key=_order_key)
    return ordered


def _order_key(m: MinuteFacts) -> tuple[datetime, str, str, str]:
    # repr() as the last key makes the order total even for two different minutes under one record number.
    return (m.start, m.record_no, m.session, repr(m))


@lru_cache(maxsize=4096)
def _parsed_course(code: str) -> tuple[int, int, str] | None:
    try:
        course = CourseCode.parse(code)
    except MalformedMessage:
        return None
    return course.mode, course.part, course.licence_class


def _course(code: object) -> tuple[int, int, str] | None:
    """(mode, part, licence class) of a course code, None when it does not parse."""
    if type(code) is str:
        return _parsed_course(code)
    try:
        course = CourseCode.parse(code)
    except MalformedMessage:
        return None
    return course.mode, course.part, course.licence_class


def _window_us(policy: Policy) -> tuple[int, int] | None:
    """The practical window as microseconds of the Beijing day (None: times with an offset, the policy decides)."""
    start, end = policy.practical_window
    if start.tzinfo is not None or end.tzinfo is not None:
        return None
    return _of_day_us(start), _of_day_us(end)


def _of_day_us(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def _in_long_runs(starts: dict[str, set[datetime]], limit: int) -> set[tuple[str, datetime]]:
    """(session, start) of the still minutes (``starts``: their start times per session) inside a run of ≥ ``limit``
    consecutive still minutes.

    Works on the set of start times of each session, so neither order nor duplicates change the answer.
    """
    marked: set[tuple[str, datetime]] = set()
    for session, times in starts.items():
        for run in _runs(sorted(times)):
            if len(run) >= limit:
                marked.update((session, t) for t in run)
    return marked


def _runs(starts: Sequence[datetime]) -> list[list[datetime]]:
    """Split sorted distinct starts into runs of consecutive minutes."""
    runs: list[list[datetime]] = []
    for t in starts:
        if runs and t - runs[-1][-1] == MINUTE:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs
