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
=====================  ====================================================================================

The verdicts depend only on the multiset of minutes, never on their order: :func:`judge_minutes` sorts internally and
the stationary rule works on sets of start times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from firmware_protocols.errors import MalformedMessage
from firmware_protocols.identifiers import CourseCode
from server.policy import Policy
from server.validation.reasons import Reason

#: Two minutes are consecutive when their starts are exactly this far apart (minute starts are whole GNSS minutes).
MINUTE = timedelta(seconds=60)
#: The lowest GNSS fix mode that gives a position (NMEA/gpsd: 1 no fix, 2 2D, 3 3D).
MIN_FIX_MODE = 2
#: The course-code mode of practical (on-road / field) training: the only one bound to the time window.
PRACTICAL_MODE = 1
#: ``MinuteFacts.face_result`` value of a failed face check (``firmware_protocols.records.FaceResult.FAIL``).
FACE_FAIL = "fail"


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
    if m.rpm is not None and m.rpm == 0:
        yield Reason.ENGINE_OFF
    if m.face_result == FACE_FAIL:
        yield Reason.FACE_FAILED


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
