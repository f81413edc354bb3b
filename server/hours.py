"""Hour totals: valid minutes per part against the policy's syllabus, 学时 credited, and the daily cap. Pure.

Each minute counts toward the part of its own course code (a course change mid-session splits the session's minutes);
hours credited = valid minutes ÷ ``policy.minutes_per_xueshi``; the daily cap counts valid practical minutes per
student per Beijing day, earliest first (``domain.md`` "Decisions").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from firmware_protocols.identifiers import CourseCode, beijing_day
from server.policy import PARTS, Policy


@dataclass(frozen=True)
class PartProgress:
    student: str
    licence_class: str
    part: int
    valid_minutes: int
    required_minutes: int
    complete: bool
    mileage_m: int = field(default=0, compare=False)
    required_mileage_m: int = field(default=0, compare=False)


def part_of_course(course: str) -> int:
    """The training part (1–4) of a 10-digit course code. Raises ``MalformedMessage`` for a bad code."""
    return CourseCode.parse(course).part


def credited_xueshi(valid_minutes: int, policy: Policy) -> tuple[int, int]:
    """(whole 学时 credited, minutes left over) for ``valid_minutes`` valid minutes."""
    if valid_minutes < 0:
        raise ValueError(f"valid minutes must not be negative, got {valid_minutes}")
    whole, rest = divmod(valid_minutes, policy.minutes_per_xueshi)
    return whole, rest


def progress(
    student: str,
    licence_class: str,
    valid_minutes_by_part: Mapping[int, int],
    policy: Policy,
    mileage_m_by_part: Mapping[int, int] | None = None,
) -> list[PartProgress]:
    """Progress of each part 1–4; a part missing from ``valid_minutes_by_part`` has 0 valid minutes.

    With ``mileage_m_by_part`` (metres covered by the valid minutes of each part) a part is complete only when it
    also has the policy's minimum mileage; without it the mileage is not checked.
    """
    unknown = sorted(set(valid_minutes_by_part) - set(PARTS))
    if unknown:
        raise ValueError(f"parts are 1-4, got {unknown}")
    result: list[PartProgress] = []
    for part in PARTS:
        valid = valid_minutes_by_part.get(part, 0)
        if valid < 0:
            raise ValueError(f"part {part}: valid minutes must not be negative, got {valid}")
        required = policy.required_minutes(licence_class, part)
        complete = valid >= required
        mileage = required_mileage = 0
        if mileage_m_by_part is not None:
            mileage = mileage_m_by_part.get(part, 0)
            required_mileage = policy.required_mileage_m(licence_class, part)
            complete = complete and mileage >= required_mileage
        result.append(
            PartProgress(student, licence_class, part, valid, required, complete, mileage, required_mileage)
        )
    return result


def apply_daily_cap(
    minutes: Sequence[tuple[str, datetime, bool]], policy: Policy, cap: int | None = None
) -> set[str]:
    """Record numbers over the daily cap, from one student's practical minutes ``(record_no, start, valid)``.

    Only valid minutes count toward the cap; per Beijing day the earliest ``policy.daily_cap_minutes_practical``
    valid minutes (by start, then record number) are kept and every later valid one is returned, so that the
    caller marks it invalid with reason ``daily_cap``. A record number seen twice counts once. Order-independent.
    ``cap`` overrides the practical cap (the ledger passes ``policy.daily_cap_minutes_classroom`` for classroom,
    simulator and remote minutes).
    """
    for record_no, start, _valid in minutes:
        if start.tzinfo is None:
            raise ValueError(f"minute {record_no}: start must be an aware datetime")
    cap = policy.daily_cap_minutes_practical if cap is None else cap
    counted: dict[date, int] = defaultdict(int)
    seen: set[str] = set()
    over: set[str] = set()
    # valid (True) before invalid for one record number, so that a duplicate's verdict does not depend on order
    for record_no, start, valid in sorted(minutes, key=lambda m: (m[1], m[0], not m[2])):
        if record_no in seen:
            continue
        seen.add(record_no)
        if not valid:
            continue
        day = beijing_day(start)
        if counted[day] < cap:
            counted[day] += 1
        else:
            over.add(record_no)
    return over
