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

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from firmware_protocols.errors import MalformedMessage
from firmware_protocols.identifiers import CourseCode, beijing_day
from server.policy import Policy
from server.validation.geo import inside_polygon
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


@dataclass(frozen=True, slots=True)
class Fix30:
    """The fix taken at second 30 of the minute."""

    lat_e6: int
    lon_e6: int
    mode: int
    satellites: int | None
    hdop10: int | None
    speed_dkmh: int


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Verdict:
    record_no: str
    valid: bool
    reasons: tuple[str, ...]  # sorted, empty when valid


def judge_minutes(minutes: Sequence[MinuteFacts], policy: Policy) -> list[Verdict]:
    """Judge every minute; one verdict per input minute, ordered by (start, record number).

    Minutes of several sessions may be mixed: the stationary rule only links minutes of the same session.
    """
    for m in minutes:
        if m.start.tzinfo is None:
            raise ValueError(f"minute {m.record_no}: start must be an aware datetime")
    ordered = sorted(minutes, key=_order_key)
    limit = policy.stationary_limit_minutes
    zero_speed = _in_long_runs(ordered, lambda m: m.max_speed_dkmh == 0, limit)
    zero_distance = _in_long_runs(ordered, lambda m: m.distance_m == 0, limit)
    verdicts: list[Verdict] = []
    for m in ordered:
        reasons = set(_own_reasons(m, policy))
        key = (m.session, m.start)
        if (m.max_speed_dkmh == 0 and key in zero_speed) or (m.distance_m == 0 and key in zero_distance):
            reasons.add(Reason.STATIONARY)
        codes = tuple(sorted(str(r) for r in reasons))
        verdicts.append(Verdict(m.record_no, not codes, codes))
    return verdicts


def _order_key(m: MinuteFacts) -> tuple[datetime, str, str, str]:
    # repr() as the last key makes the order total even for two different minutes under one record number.
    return (m.start, m.record_no, m.session, repr(m))


def _own_reasons(m: MinuteFacts, policy: Policy) -> Iterable[Reason]:
    """The rules that look at one minute alone."""
    if m.fix30 is None or m.fix30.mode < MIN_FIX_MODE or m.fix_count < policy.min_fixes_per_minute:
        yield Reason.NO_FIX
    try:
        course = CourseCode.parse(m.course)
    except MalformedMessage:
        yield Reason.BAD_COURSE
    else:
        if course.mode == PRACTICAL_MODE and not policy.in_practical_window(m.start):
            yield Reason.OUTSIDE_TIME_WINDOW
        if course.mode == PRACTICAL_MODE and m.school is not None and m.fix30 is not None:
            areas = policy.areas_for(m.school, course.part)
            lat, lon = m.fix30.lat_e6 / 1e6, m.fix30.lon_e6 / 1e6
            if areas and not any(inside_polygon(lat, lon, a.polygon) for a in areas):
                yield Reason.OUTSIDE_TEACHING_AREA
        if m.coach_classes is not None and course.licence_class not in m.coach_classes:
            yield Reason.COACH_NOT_LICENSED
    if m.rpm is not None and m.rpm == 0:
        yield Reason.ENGINE_OFF
    if m.face_result == FACE_FAIL:
        yield Reason.FACE_FAILED
    yield from _time_reasons(m, policy)
    if m.school is not None and any(x is not None and x != m.school for x in (m.student_school, m.coach_school)):
        yield Reason.FOREIGN_SCHOOL
    if m.vin is not None and m.bound_vin is not None and m.vin != m.bound_vin:
        yield Reason.FOREIGN_CAR


def _time_reasons(m: MinuteFacts, policy: Policy) -> Iterable[Reason]:
    """GNSS time vs the record's time vs its arrival; the record number's date vs the minute's Beijing day."""
    if m.fix30_time is not None:
        if abs((m.fix30_time - (m.start + FIX30_OFFSET)).total_seconds()) > policy.gnss_time_tolerance_s:
            yield Reason.GNSS_TIME_MISMATCH
    day = beijing_day(m.start)
    if m.record_no[16:22] != f"{day.year % 100:02d}{day.month:02d}{day.day:02d}":
        yield Reason.RECORD_DATE_MISMATCH
    if m.received_at is not None:
        ahead = (m.start + MINUTE - m.received_at).total_seconds()
        if ahead > policy.max_future_s:
            yield Reason.TIME_IN_FUTURE
        if m.received_at - m.start > timedelta(hours=policy.backfill_window_hours):
            yield Reason.BACKFILL_TOO_LATE


def _in_long_runs(
    minutes: Iterable[MinuteFacts], still: Callable[[MinuteFacts], bool], limit: int
) -> set[tuple[str, datetime]]:
    """(session, start) of the ``still`` minutes inside a run of ≥ ``limit`` consecutive ``still`` minutes.

    Works on the set of start times of each session, so neither order nor duplicates change the answer.
    """
    starts: dict[str, set[datetime]] = defaultdict(set)
    for m in minutes:
        if still(m):
            starts[m.session].add(m.start)
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
