"""Training-hour policies: the per-province rules (学时 length, time window, caps, hours per part) loaded from TOML.

Every figure that ``domain.md`` marks *(varies)* is policy data: it lives in a ``policies/*.toml`` file with a comment
naming its source, never as a constant in code. A policy file looks like ``policies/national-2016.toml``::

    name = "national-2016"
    effective_from = 2016-01-01
    [xueshi]        minutes_per_xueshi, min_effective_per_xueshi
    [practical]     window_start, window_end (TOML local times, Beijing), daily_cap_minutes
    [classroom]     daily_cap_minutes (classroom, simulator and remote courses: modes 2-4)
    [minute_audit]  stationary_limit_minutes, min_fixes_per_minute, max_implied_speed_kmh,
                    gnss_time_tolerance_s, max_future_s, backfill_window_hours
    [photos]        window_minutes, recheck_interval_minutes, recheck_grace_minutes, void_after_missing_windows,
                    decisive_duplicates (optional: the kinds of photo copies that invalidate a session; default all
                    of exact, near, phash)
    [session_audit] min_distance_m, min_valid_percent
    [part_hours.C1] 1 = 12 ... 4 = 10        (licence class -> part -> 学时)
    [mileage.C1]    3 = 300                  (licence class -> part -> minimum km of valid minutes; optional)
    [[teaching_areas]]  school, parts, name, polygon = [[lat, lon], ...]  (degrees; optional, per school)
    [escrow]        release percentages per event: enrolment_confirmed, part_1_accepted ... part_4_accepted
                    (integers, summing to 100; optional: default 10 / 30 / 30 / 30 / 0, domain.md "Approval")
    [booking]       walk_ins, cancel_before_minutes, max_capacity, no_show_after_minutes, sign_in_early_minutes
    [complaints]    assign_within_hours, answer_within_hours
    [ranking]       weight_valid, weight_fraud, weight_progress, weight_evaluation, weight_complaints,
                    weight_pass_rate (integers, percent, summing to 100), min_ratings, min_exams,
                    complaints_per_student_full (per mille), red_min_score, black_max_score

A bad file raises :class:`PolicyError` naming the file and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

from firmware_protocols.identifiers import BEIJING

#: The folder of the policies shipped with jiapei.
BUILTIN_DIR = Path(__file__).with_name("policies")
#: The training parts of every licence class.
PARTS = (1, 2, 3, 4)

_T = TypeVar("_T")


class PolicyError(ValueError):
    """A policy file is missing, unreadable or has a missing or wrong field; or a policy was asked for what it lacks."""


#: The kinds of photo copies the server finds (server.photos): the same JPEG, the same face image, the same picture.
DUPLICATE_KINDS = frozenset({"exact", "near", "phash"})

#: Fewest corners of a teaching-area polygon.
MIN_POLYGON_POINTS = 3


@dataclass(frozen=True)
class TeachingArea:
    """A school's teaching area (教学区域) for some parts: a polygon of (lat, lon) degrees, WGS-84."""

    school: str
    parts: frozenset[int]
    name: str
    polygon: tuple[tuple[float, float], ...]


#: The events that may move a school's money (domain.md "Decisions": nothing else does).
ESCROW_EVENTS = ("enrolment_confirmed", "part_1_accepted", "part_2_accepted", "part_3_accepted", "part_4_accepted")


@dataclass(frozen=True)
class EscrowSchedule:
    """先培后付: the percentage of the fee released to the school on each event; the percentages sum to 100."""

    percent: tuple[tuple[str, int], ...] = (
        ("enrolment_confirmed", 10), ("part_1_accepted", 30), ("part_2_accepted", 30), ("part_3_accepted", 30),
        ("part_4_accepted", 0),
    )  # fmt: skip

    def allocate(self, fee_fen: int) -> dict[str, int]:
        """Fen released on each event: floor of the share, the leftover fen to the events in schedule order
        (largest remainder), so the allocations sum to ``fee_fen`` exactly (integer fen, never floats)."""
        if fee_fen < 0:
            raise ValueError("a fee is not negative")
        base = {e: fee_fen * p // 100 for e, p in self.percent}
        left = fee_fen - sum(base.values())
        order = sorted((e for e, p in self.percent if p > 0), key=lambda e: (-(fee_fen * dict(self.percent)[e] % 100),
                                                                            ESCROW_EVENTS.index(e)))  # fmt: skip
        for e in order[:left]:
            base[e] += 1
        return base


@dataclass(frozen=True)
class BookingRules:
    """Training slots: who may sign in without a booking, how late a booking may be cancelled, no-shows."""

    walk_ins: bool = False
    cancel_before_minutes: int = 120
    max_capacity: int = 1
    no_show_after_minutes: int = 15
    sign_in_early_minutes: int = 10


@dataclass(frozen=True)
class ComplaintRules:
    assign_within_hours: int = 24
    answer_within_hours: int = 72


@dataclass(frozen=True)
class RankingWeights:
    """The red/black list's weights (percent, sum 100) and thresholds (server.figures)."""

    weight_valid: int = 35
    weight_fraud: int = 20
    weight_progress: int = 10
    weight_evaluation: int = 15
    weight_complaints: int = 10
    weight_pass_rate: int = 10
    min_ratings: int = 3
    min_exams: int = 3
    complaints_per_student_full: int = 200  # per mille: 0.2 complaints per student takes the whole term
    red_min_score: int = 85
    black_max_score: int = 60


@dataclass(frozen=True)
class Policy:
    """One version of the training rules. Times of day are Beijing local times.

    The fields after ``part_hours`` have defaults (the 2016 national figures of ``domain.md``) so that a policy can be
    built in code for tests; a policy *file* must name every one of them.
    """

    name: str
    effective_from: date
    minutes_per_xueshi: int
    min_effective_per_xueshi: int
    practical_window: tuple[time, time]
    daily_cap_minutes_practical: int
    stationary_limit_minutes: int
    min_fixes_per_minute: int
    part_hours: dict[str, dict[int, int]]
    daily_cap_minutes_classroom: int = 240
    max_implied_speed_kmh: int = 150
    gnss_time_tolerance_s: int = 60
    max_future_s: int = 300
    backfill_window_hours: int = 168
    photo_window_minutes: int = 15
    recheck_interval_minutes: int = 15
    recheck_grace_minutes: int = 5
    void_after_missing_windows: int = 2
    decisive_duplicates: frozenset[str] = DUPLICATE_KINDS
    min_session_distance_m: int = 100
    min_valid_percent: int = 75
    min_mileage_km: dict[str, dict[int, int]] = field(default_factory=dict)
    teaching_areas: tuple[TeachingArea, ...] = ()
    escrow: EscrowSchedule = field(default_factory=EscrowSchedule)
    booking: BookingRules = field(default_factory=BookingRules)
    complaints: ComplaintRules = field(default_factory=ComplaintRules)
    ranking: RankingWeights = field(default_factory=RankingWeights)

    def areas_for(self, school: str, part: int) -> tuple[TeachingArea, ...]:
        """The teaching areas of ``school`` for ``part`` (none: the area rule is not applied)."""
        return tuple(a for a in self.teaching_areas if a.school == school and part in a.parts)

    def required_mileage_m(self, licence_class: str, part: int) -> int:
        """Metres of valid minutes a part needs (0 when the policy names no minimum)."""
        return self.min_mileage_km.get(licence_class, {}).get(part, 0) * 1000

    def required_minutes(self, licence_class: str, part: int) -> int:
        """Valid minutes a student of ``licence_class`` needs for ``part``: 学时 × ``minutes_per_xueshi``."""
        hours = self.part_hours.get(licence_class)
        if hours is None:
            raise PolicyError(f"policy {self.name!r} has no hours for licence class {licence_class!r}")
        if part not in hours:
            raise PolicyError(f"policy {self.name!r} has no hours for class {licence_class} part {part!r}")
        return hours[part] * self.minutes_per_xueshi

    def in_practical_window(self, t: datetime) -> bool:
        """Whether the aware time ``t`` is inside the practical window (start inclusive, end exclusive), Beijing."""
        if t.tzinfo is None:
            raise ValueError("naive datetime")
        local = t.astimezone(BEIJING).time().replace(tzinfo=None)
        start, end = self.practical_window
        if start <= end:
            return start <= local < end
        return local >= start or local < end  # a window that runs over midnight


def load_policy(path: str | Path) -> Policy:
    """Load and check a policy file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise PolicyError(f"policy file {path} does not exist") from exc
    except OSError as exc:
        raise PolicyError(f"policy file {path} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from exc
    try:
        return policy_from_mapping(data)
    except PolicyError as exc:
        raise PolicyError(f"policy file {path}: {exc}") from exc


def load_builtin_policy(name: str) -> Policy:
    """Load a policy shipped with jiapei: ``"national-2016"`` or ``"demo"``."""
    known = builtin_policy_names()
    if name not in known:
        raise PolicyError(f"no built-in policy {name!r}; known: {', '.join(known)}")
    return load_policy(BUILTIN_DIR / f"{name}.toml")


def builtin_policy_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def policy_in_force(policies: Iterable[Policy], at: datetime) -> Policy:
    """The policy that judges a minute at ``at``: the latest ``effective_from`` on or before its Beijing day."""
    if at.tzinfo is None:
        raise ValueError("naive datetime")
    day = at.astimezone(BEIJING).date()
    candidates = [p for p in policies if p.effective_from <= day]
    if not candidates:
        raise PolicyError(f"no policy in force on {day.isoformat()}")
    return max(candidates, key=lambda p: (p.effective_from, p.name))


def policy_from_mapping(data: Mapping[str, Any]) -> Policy:
    """Build a :class:`Policy` from parsed TOML, checking every field."""
    name = _get(data, "name", str)
    if not name:
        raise PolicyError("name must not be empty")
    effective_from = _get(data, "effective_from", date)
    if isinstance(effective_from, datetime):
        raise PolicyError("effective_from must be a date (YYYY-MM-DD), not a date-time")
    xueshi = _table(data, "xueshi")
    practical = _table(data, "practical")
    audit = _table(data, "minute_audit")
    minutes_per_xueshi = _positive(xueshi, "xueshi.minutes_per_xueshi")
    min_effective = _positive(xueshi, "xueshi.min_effective_per_xueshi")
    if min_effective > minutes_per_xueshi:
        raise PolicyError("xueshi.min_effective_per_xueshi must not exceed xueshi.minutes_per_xueshi")
    start = _get(practical, "window_start", time, "practical.window_start")
    end = _get(practical, "window_end", time, "practical.window_end")
    if start.tzinfo is not None or end.tzinfo is not None:
        raise PolicyError("practical.window_start/window_end are Beijing local times without an offset")
    if start == end:
        raise PolicyError("practical.window_start and window_end must differ")
    classroom = _table(data, "classroom")
    photos = _table(data, "photos")
    session_audit = _table(data, "session_audit")
    part_hours = _part_hours(data)
    min_valid_percent = _non_negative(session_audit, "session_audit.min_valid_percent")
    if min_valid_percent > 100:
        raise PolicyError(f"session_audit.min_valid_percent must be 0-100, got {min_valid_percent}")
    return Policy(
        name=name,
        effective_from=effective_from,
        minutes_per_xueshi=minutes_per_xueshi,
        min_effective_per_xueshi=min_effective,
        practical_window=(start, end),
        daily_cap_minutes_practical=_positive(practical, "practical.daily_cap_minutes"),
        stationary_limit_minutes=_positive(audit, "minute_audit.stationary_limit_minutes"),
        min_fixes_per_minute=_non_negative(audit, "minute_audit.min_fixes_per_minute"),
        part_hours=part_hours,
        daily_cap_minutes_classroom=_positive(classroom, "classroom.daily_cap_minutes"),
        max_implied_speed_kmh=_positive(audit, "minute_audit.max_implied_speed_kmh"),
        gnss_time_tolerance_s=_positive(audit, "minute_audit.gnss_time_tolerance_s"),
        max_future_s=_non_negative(audit, "minute_audit.max_future_s"),
        backfill_window_hours=_positive(audit, "minute_audit.backfill_window_hours"),
        photo_window_minutes=_positive(photos, "photos.window_minutes"),
        recheck_interval_minutes=_positive(photos, "photos.recheck_interval_minutes"),
        recheck_grace_minutes=_non_negative(photos, "photos.recheck_grace_minutes"),
        void_after_missing_windows=_positive(photos, "photos.void_after_missing_windows"),
        decisive_duplicates=_duplicate_kinds(photos),
        min_session_distance_m=_non_negative(session_audit, "session_audit.min_distance_m"),
        min_valid_percent=min_valid_percent,
        min_mileage_km=_mileage(data, part_hours),
        teaching_areas=_teaching_areas(data),
        escrow=_escrow(data),
        booking=_booking(data),
        complaints=_complaint_rules(data),
        ranking=_ranking(data),
    )


def _duplicate_kinds(photos: Mapping[str, Any]) -> frozenset[str]:
    """``photos.decisive_duplicates``: a list of kinds of :data:`DUPLICATE_KINDS` (absent: all of them)."""
    if "decisive_duplicates" not in photos:
        return DUPLICATE_KINDS
    value = photos["decisive_duplicates"]
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise PolicyError("photos.decisive_duplicates must be a list of strings")
    unknown = sorted(set(value) - DUPLICATE_KINDS)
    if unknown:
        raise PolicyError(f"photos.decisive_duplicates names unknown kind(s) {', '.join(unknown)}; kinds are "
                          f"{', '.join(sorted(DUPLICATE_KINDS))}")  # fmt: skip
    return frozenset(value)


def _optional_table(data: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, dict):
        raise PolicyError(f"[{key}] must be a table")
    return value


def _escrow(data: Mapping[str, Any]) -> EscrowSchedule:
    """``[escrow]`` event = percent of the fee (integers 0-100 summing to 100)."""
    table = _optional_table(data, "escrow")
    if table is None:
        return EscrowSchedule()
    unknown = sorted(set(table) - set(ESCROW_EVENTS))
    if unknown:
        raise PolicyError(f"escrow names unknown event(s) {', '.join(unknown)}; events are {', '.join(ESCROW_EVENTS)}")
    percent = tuple((e, _non_negative(table, f"escrow.{e}") if e in table else 0) for e in ESCROW_EVENTS)
    if any(p > 100 for _e, p in percent):
        raise PolicyError("escrow percentages must be 0-100")
    total = sum(p for _e, p in percent)
    if total != 100:
        raise PolicyError(f"escrow percentages must sum to 100, got {total}")
    return EscrowSchedule(percent)


def _booking(data: Mapping[str, Any]) -> BookingRules:
    table = _optional_table(data, "booking")
    if table is None:
        return BookingRules()
    walk_ins = table.get("walk_ins", False)
    if not isinstance(walk_ins, bool):
        raise PolicyError("booking.walk_ins must be true or false")
    return BookingRules(
        walk_ins=walk_ins,
        cancel_before_minutes=_non_negative(table, "booking.cancel_before_minutes"),
        max_capacity=_positive(table, "booking.max_capacity"),
        no_show_after_minutes=_positive(table, "booking.no_show_after_minutes"),
        sign_in_early_minutes=_non_negative(table, "booking.sign_in_early_minutes"),
    )


def _complaint_rules(data: Mapping[str, Any]) -> ComplaintRules:
    table = _optional_table(data, "complaints")
    if table is None:
        return ComplaintRules()
    return ComplaintRules(assign_within_hours=_positive(table, "complaints.assign_within_hours"),
                          answer_within_hours=_positive(table, "complaints.answer_within_hours"))  # fmt: skip


_WEIGHTS = ("weight_valid", "weight_fraud", "weight_progress", "weight_evaluation", "weight_complaints",
            "weight_pass_rate")  # fmt: skip


def _ranking(data: Mapping[str, Any]) -> RankingWeights:
    table = _optional_table(data, "ranking")
    if table is None:
        return RankingWeights()
    weights = {w: _non_negative(table, f"ranking.{w}") for w in _WEIGHTS}
    if sum(weights.values()) != 100:
        raise PolicyError(f"ranking weights must sum to 100, got {sum(weights.values())}")
    red = _non_negative(table, "ranking.red_min_score")
    black = _non_negative(table, "ranking.black_max_score")
    if not black < red <= 100:
        raise PolicyError("ranking needs black_max_score < red_min_score <= 100")
    return RankingWeights(**weights, min_ratings=_positive(table, "ranking.min_ratings"),
                          min_exams=_positive(table, "ranking.min_exams"),
                          complaints_per_student_full=_positive(table, "ranking.complaints_per_student_full"),
                          red_min_score=red, black_max_score=black)  # fmt: skip


def _mileage(data: Mapping[str, Any], part_hours: Mapping[str, Any]) -> dict[str, dict[int, int]]:
    """``[mileage.<class>]`` part = km (optional: a part it does not name needs no mileage)."""
    table = data.get("mileage", {})
    if not isinstance(table, dict):
        raise PolicyError("mileage must be a table of licence class -> part -> km")
    result: dict[str, dict[int, int]] = {}
    for licence_class, parts in table.items():
        if licence_class not in part_hours:
            raise PolicyError(f"mileage.{licence_class} names a class without part_hours")
        if not isinstance(parts, dict):
            raise PolicyError(f"mileage.{licence_class} must be a table of part = km")
        km: dict[int, int] = {}
        for key in parts:
            if key not in {str(p) for p in PARTS}:
                raise PolicyError(f"mileage.{licence_class} has part {key!r}; parts are 1-4")
            km[int(key)] = _non_negative(parts, f"mileage.{licence_class}.{key}")
        result[licence_class] = dict(sorted(km.items()))
    return result


def _teaching_areas(data: Mapping[str, Any]) -> tuple[TeachingArea, ...]:
    """``[[teaching_areas]]``: school, parts, name, polygon (optional; none means the area rule is not applied)."""
    items = data.get("teaching_areas", [])
    if not isinstance(items, list):
        raise PolicyError("teaching_areas must be an array of tables ([[teaching_areas]])")
    areas: list[TeachingArea] = []
    for i, item in enumerate(items):
        label = f"teaching_areas[{i}]"
        if not isinstance(item, dict):
            raise PolicyError(f"{label} must be a table")
        school = _get(item, "school", str, f"{label}.school")
        if len(school) != 16:
            raise PolicyError(f"{label}.school must be a 16-character school number, got {school!r}")
        name = _get(item, "name", str, f"{label}.name")
        parts = _get(item, "parts", list, f"{label}.parts")
        if not parts or any(not isinstance(p, int) or isinstance(p, bool) or p not in PARTS for p in parts):
            raise PolicyError(f"{label}.parts must be a non-empty list of parts 1-4, got {parts!r}")
        polygon = _get(item, "polygon", list, f"{label}.polygon")
        points: list[tuple[float, float]] = []
        for point in polygon:
            if (
                not isinstance(point, list)
                or len(point) != 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in point)
                or not (-90 <= point[0] <= 90 and -180 <= point[1] <= 180)
            ):
                raise PolicyError(f"{label}.polygon points must be [lat, lon] in degrees, got {point!r}")
            points.append((float(point[0]), float(point[1])))
        if len(set(points)) < MIN_POLYGON_POINTS:
            raise PolicyError(f"{label}.polygon needs at least {MIN_POLYGON_POINTS} distinct points")
        areas.append(TeachingArea(school, frozenset(parts), name, tuple(points)))
    return tuple(areas)


def _part_hours(data: Mapping[str, Any]) -> dict[str, dict[int, int]]:
    table = _table(data, "part_hours")
    if not table:
        raise PolicyError("part_hours must name at least one licence class")
    result: dict[str, dict[int, int]] = {}
    for licence_class, parts in table.items():
        if not isinstance(parts, dict):
            raise PolicyError(f"part_hours.{licence_class} must be a table of part = 学时")
        hours: dict[int, int] = {}
        for key in parts:
            if key not in {str(p) for p in PARTS}:
                raise PolicyError(f"part_hours.{licence_class} has part {key!r}; parts are 1-4")
            hours[int(key)] = _positive(parts, f"part_hours.{licence_class}.{key}")
        missing = [p for p in PARTS if p not in hours]
        if missing:
            raise PolicyError(f"part_hours.{licence_class} lacks part(s) {', '.join(map(str, missing))}")
        result[licence_class] = dict(sorted(hours.items()))
    return result


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise PolicyError(f"[{key}] table is missing")
    return value


def _get(data: Mapping[str, Any], key: str, kind: type[_T], label: str | None = None) -> _T:
    label = label or key
    if key not in data:
        raise PolicyError(f"{label} is missing")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PolicyError(f"{label} must be a {kind.__name__}, got {value!r}")
    return value


def _non_negative(data: Mapping[str, Any], label: str) -> int:
    """The integer at the last part of the dotted ``label`` in ``data``, ≥ 0."""
    value = _get(data, label.rsplit(".", 1)[-1], int, label)
    if value < 0:
        raise PolicyError(f"{label} must not be negative, got {value}")
    return value


def _positive(data: Mapping[str, Any], label: str) -> int:
    value = _non_negative(data, label)
    if value == 0:
        raise PolicyError(f"{label} must be positive, got 0")
    return value
