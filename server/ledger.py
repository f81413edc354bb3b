"""Derived data after ingest: minute verdicts per session, hour totals per student and part, stage-review notices.

Everything here is recomputed from stored rows (idempotent): re-running it for any session or student changes
nothing unless the records or the policy changed. The rules themselves are the pure cores in
:mod:`server.validation.minutes` and :mod:`server.hours`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from firmware_protocols.errors import MalformedMessage
from firmware_protocols.identifiers import CourseCode
from server.clock import Clock
from server.db import SessionFactory
from server.hours import apply_daily_cap, progress
from server.models import REVIEW_PENDING, HourTotal, Minute, StageReview, Student, TrainingSession
from server.policy import Policy
from server.validation.minutes import Fix30, MinuteFacts, judge_minutes
from server.validation.reasons import Reason

log = logging.getLogger(__name__)

PRACTICAL_MODE = 1


def facts_of(m: Minute, session: str) -> MinuteFacts:
    f = m.facts
    fix = f.get("fix30")
    fix30 = None
    if isinstance(fix, dict):
        fix30 = Fix30(
            lat_e6=int(fix.get("lat", 0)),
            lon_e6=int(fix.get("lon", 0)),
            mode=int(fix.get("mode") or 0),
            satellites=_int_or_none(fix.get("sats")),
            hdop10=_int_or_none(fix.get("hdop")),
            speed_dkmh=int(fix.get("speed") or 0),
        )
    return MinuteFacts(
        record_no=m.record_no,
        terminal=m.terminal_id,
        student=m.student_id,
        coach=m.coach_id,
        course=m.course,
        session=session,
        start=m.start,
        max_speed_dkmh=int(f["max_speed"]),
        distance_m=int(f["distance_m"]),
        fix_count=int(f["fix_count"]),
        fix30=fix30,
        rpm=_int_or_none(f.get("rpm")),
        face_result=f.get("face_result"),
    )


def _int_or_none(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def stage_notice_id(student: str, part: int) -> str:
    """Deterministic: one stage review per student and part, whichever worker sees the part complete first."""
    return f"{student}-{part}"


class Ledger:
    """Re-judges sessions, recomputes hour totals and enqueues stage reviews."""

    def __init__(self, session_factory: SessionFactory, policy: Policy, clock: Clock) -> None:
        self._sf = session_factory
        self.policy = policy
        self._clock = clock

    def after_ingest(self, session_ids: Iterable[int]) -> list[str]:
        """Hook for :class:`server.ingest.Ingestor`: returns the notice ids of stage reviews created."""
        students = self.rejudge_sessions(session_ids)
        return self.recompute_students(students)

    def rejudge_sessions(self, session_ids: Iterable[int]) -> set[str]:
        """Judge all minutes of each session at once; returns the students whose minutes were judged."""
        students: set[str] = set()
        now = self._clock()
        with self._sf() as s, s.begin():
            for sid in sorted(set(session_ids)):
                ts = s.get(TrainingSession, sid)
                if ts is None:
                    continue
                minutes = list(s.scalars(select(Minute).where(Minute.session_id == sid)))
                by_no = {m.record_no: m for m in minutes}
                for verdict in judge_minutes([facts_of(m, ts.session) for m in minutes], self.policy):
                    m = by_no[verdict.record_no]
                    capped = Reason.DAILY_CAP in (m.reasons or [])
                    reasons = sorted(set(verdict.reasons) | ({str(Reason.DAILY_CAP)} if capped else set()))
                    m.valid, m.reasons, m.judged_at = not reasons, reasons, now
                    students.add(m.student_id)
                ts.minutes_count = len(minutes)
                ts.valid_minutes = sum(1 for m in minutes if m.valid)
        return students

    def recompute_students(self, students: Iterable[str]) -> list[str]:
        created: list[str] = []
        for student in sorted(set(students)):
            try:
                created.extend(self._recompute_student(student))
            except IntegrityError:  # another worker enqueued the same stage review first: recompute once more
                created.extend(self._recompute_student(student))
        return created

    def _recompute_student(self, student_id: str) -> list[str]:
        now = self._clock()
        created: list[str] = []
        with self._sf() as s, s.begin():
            student = s.get(Student, student_id)
            minutes = list(s.scalars(select(Minute).where(Minute.student_id == student_id, Minute.valid.is_not(None))))
            self._apply_daily_cap(s, minutes)
            if student is None:
                log.info("minutes of unenrolled student %s: no hour totals", student_id)
                return []
            valid_by_part: dict[int, int] = defaultdict(int)
            for m in minutes:
                if m.valid:
                    valid_by_part[m.part] += 1
            for p in progress(student_id, student.licence_class, valid_by_part, self.policy):
                row = s.get(HourTotal, (student_id, p.part))
                if row is None:
                    row = HourTotal(student_id=student_id, part=p.part)
                    s.add(row)
                row.licence_class, row.valid_minutes = p.licence_class, p.valid_minutes
                row.required_minutes, row.complete, row.updated_at = p.required_minutes, p.complete, now
                if p.complete and p.required_minutes > 0:
                    notice_id = stage_notice_id(student_id, p.part)
                    if s.scalar(select(StageReview.id).where(StageReview.notice_id == notice_id)) is None:
                        records = sorted(m.record_no for m in minutes if m.valid and m.part == p.part)
                        s.add(self._stage_review(student, p.part, p.valid_minutes, records, now))
                        created.append(notice_id)
        return created

    def _apply_daily_cap(self, s: Session, minutes: list[Minute]) -> None:
        practical = [m for m in minutes if _is_practical(m.course)]
        judged = [(m.record_no, m.start, not [r for r in m.reasons if r != Reason.DAILY_CAP]) for m in practical]
        over = apply_daily_cap(judged, self.policy)
        for m, (_no, _start, ok) in zip(practical, judged, strict=True):
            reasons = sorted(
                {r for r in m.reasons if r != Reason.DAILY_CAP}
                | ({str(Reason.DAILY_CAP)} if m.record_no in over else set())
            )
            if reasons != m.reasons:
                m.reasons = reasons
            m.valid = ok and m.record_no not in over

    def _stage_review(self, student: Student, part: int, valid: int, records: list[str], now: datetime) -> StageReview:
        from server.exam_client import StageReviewNotice  # the adapter to the exam side

        notice_id = stage_notice_id(student.id, part)
        notice = StageReviewNotice.create(
            notice_id=notice_id,
            student=student.id,
            school=student.school_id,
            licence_class=student.licence_class,
            part=part,
            valid_minutes=valid,
            xueshi=valid // self.policy.minutes_per_xueshi,
            records=records,
            submitted_at=now,
        ).to_json()
        return StageReview(
            notice_id=notice_id,
            student_id=student.id,
            part=part,
            notice=notice,
            status=REVIEW_PENDING,
            attempts=0,
            next_attempt_at=now,
            last_error=None,
            reply=None,
            created_at=now,
            updated_at=now,
        )


def _is_practical(course: str) -> bool:
    try:
        return CourseCode.parse(course).mode == PRACTICAL_MODE
    except MalformedMessage:
        return False
