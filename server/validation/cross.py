"""Rules across sessions and terminals: one person in two cars at once, and records dated back along a chain. Pure.

==================  ========================================================================================
``student_overlap``  the same student has a minute on another terminal whose start is less than 60 s away
``coach_overlap``    the same coach has a minute on another terminal whose start is less than 60 s away
``time_backwards``   a minute of a terminal's chain starts earlier than a minute with a lower sequence number of
                     the same chain: it was written after later minutes and dated back (backdated backfill)
==================  ========================================================================================

Both minutes of an overlap get the code (which one is real is for the review queue). The student's daily cap is in
:func:`server.hours.apply_daily_cap`. Every answer depends on the sets given, not on their order.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.validation.reasons import Reason

#: Two minutes overlap when their starts are closer than this.
OVERLAP = timedelta(seconds=60)


@dataclass(slots=True, unsafe_hash=True)  # not frozen: built for every minute re-judged, frozen costs 4x more
class MinuteSlot:
    """Who was where when: enough of a minute to find overlaps."""

    record_no: str
    terminal: str
    student: str
    coach: str
    start: datetime


def overlaps(mine: Iterable[MinuteSlot], others: Iterable[MinuteSlot]) -> dict[str, set[str]]:
    """Reasons for each of ``mine`` that overlaps one of ``others`` on another terminal (same student or coach)."""
    by_student: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    by_coach: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for o in others:
        by_student[o.student].append((o.start, o.terminal))
        by_coach[o.coach].append((o.start, o.terminal))
    if not by_student:
        return {}  # nobody else to overlap with
    for lists in (by_student, by_coach):
        for v in lists.values():
            v.sort()
    out: dict[str, set[str]] = defaultdict(set)
    for m in mine:
        if _clash(by_student.get(m.student, []), m):
            out[m.record_no].add(Reason.STUDENT_OVERLAP)
        if _clash(by_coach.get(m.coach, []), m):
            out[m.record_no].add(Reason.COACH_OVERLAP)
    return dict(out)


def _clash(slots: Sequence[tuple[datetime, str]], m: MinuteSlot) -> bool:
    i = bisect.bisect_right(slots, (m.start - OVERLAP, "\uffff"))
    while i < len(slots) and slots[i][0] < m.start + OVERLAP:
        start, terminal = slots[i]
        if terminal != m.terminal and abs(start - m.start) < OVERLAP:
            return True
        i += 1
    return False


def backdated(chain_minutes: Iterable[tuple[int, datetime, str]], floor: datetime | None = None) -> set[str]:
    """Record numbers of ``(seq, start, record_no)`` minutes of ONE chain that start before an earlier-seq minute.

    ``floor`` is the latest start among the chain's minutes with a lower seq than any given (None: none).
    """
    latest = floor
    out: set[str] = set()
    for _seq, start, record_no in sorted(chain_minutes):
        if latest is not None and start < latest:
            out.add(record_no)
        latest = start if latest is None else max(latest, start)
    return out
