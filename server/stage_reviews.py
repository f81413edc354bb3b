"""Stage reviews (阶段报审) on the server's side: which notice to send for a complete part, the outbox row that carries
it, and what an exam-side rejection sends back to review.

The first notice of a student's part is ``{student}-{part}``. When the exam side rejects it, the records it names (all
of the notice's when it names none) go back to review: the ledger marks them ``exam_rejected`` until an operator
decides each of them, and only a decision made after the rejection counts. Once every one is decided the part goes
again as ``{student}-{part}-{n}``. A refusal (HTTP 4xx: the notice itself is malformed or unsigned) names no record
and waits for an engineer. Everything here is derived from the ``stage_reviews`` and ``review_decisions`` rows, so a
crash between the exam side's answer and the re-judging changes nothing: no new notice can go before the decisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.exam_client import StageReviewNotice
from server.models import REVIEW_PENDING, REVIEW_REJECTED, Minute, StageReview, Student, TrainingSession
from server.policy import Policy
from server.review import latest_decisions_at, session_target


def stage_notice_id(student: str, part: int) -> str:
    """Deterministic: one stage review per student and part, whichever worker sees the part complete first."""
    return f"{student}-{part}"


def new_stage_review(student: Student, part: int, valid: int, records: list[str], now: datetime, notice_id: str,
                     mileage_m: int, policy: Policy) -> StageReview:  # fmt: skip
    """The outbox row of a notice for a complete part: ``valid`` approved minutes, ``records`` behind them."""
    notice = StageReviewNotice.create(
        notice_id=notice_id,
        student=student.id,
        school=student.school_id,
        licence_class=student.licence_class,
        part=part,
        valid_minutes=valid,
        xueshi=valid // policy.minutes_per_xueshi,
        records=records,
        submitted_at=now,
        mileage_m=mileage_m,
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


def rejected_records(review: StageReview) -> set[str]:
    """The records an exam-side rejection sends back to review: those it names, else all of the notice's. A refusal
    (a malformed notice, HTTP 4xx) names no record at fault and sends none back."""
    reply = review.reply or {}
    if review.status != REVIEW_REJECTED or reply.get("status") != "rejected":
        return set()
    named = reply.get("rejected_records")
    if isinstance(named, dict) and named:
        return {str(r) for r in named}
    return {str(r) for r in review.notice.get("records", [])}


def exam_rejections(s: Session, students: Iterable[str]) -> dict[str, datetime]:
    """record number → when the exam side last rejected it, for the minutes of these students."""
    out: dict[str, datetime] = {}
    rows = s.scalars(select(StageReview).where(StageReview.student_id.in_(sorted(set(students))),
                                               StageReview.status == REVIEW_REJECTED))  # fmt: skip
    for review in rows:
        for record in rejected_records(review):
            out[record] = max(out.get(record, review.updated_at), review.updated_at)
    return out


def decided_since(decided: tuple[str, datetime] | None, since: datetime) -> bool:
    """An operator's decision made at or after ``since`` (decisions are logged to the second)."""
    return decided is not None and decided[1] >= since.replace(microsecond=0)


def next_notice_id(s: Session, student_id: str, part: int) -> str | None:
    """The id of the stage review to send for a complete part, or None when none is due.

    The first is ``{student}-{part}``. After a rejection, a new notice (``{student}-{part}-{n}``) goes only once an
    operator decided every record the exam side sent back, after it did; a refusal waits for an engineer.
    Deterministic, so two workers seeing the same part complete create the same notice (the unique id keeps one).
    """
    reviews = list(s.scalars(select(StageReview).where(StageReview.student_id == student_id,
                                                       StageReview.part == part).order_by(StageReview.id)))  # fmt: skip
    if not reviews:
        return stage_notice_id(student_id, part)
    latest = reviews[-1]
    records = rejected_records(latest)
    if not records:  # pending, accepted, or refused
        return None
    minutes = {no: (terminal, session) for no, terminal, session in s.execute(
        select(Minute.record_no, Minute.terminal_id, TrainingSession.session)
        .join(TrainingSession, TrainingSession.id == Minute.session_id)
        .where(Minute.record_no.in_(sorted(records)))).all()}  # fmt: skip
    targets = {*records, *(session_target(*ts) for ts in minutes.values())}
    manual = latest_decisions_at(s, targets)
    for record in records:
        where = minutes.get(record)
        decided = manual.get(record) or (manual.get(session_target(*where)) if where else None)
        if not decided_since(decided, latest.updated_at):
            return None
    return f"{stage_notice_id(student_id, part)}-{len(reviews) + 1}"
