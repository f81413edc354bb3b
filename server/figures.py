"""Supervision figures of a school and the red/black list (红黑榜) that ranks schools by them.

Per school, over every minute recorded by its cars (terminals bound to the school):

- ``xueshi`` = valid minutes ÷ the policy's ``minutes_per_xueshi`` (hours credited);
- ``anomaly_rate`` *a* = invalid minutes ÷ judged minutes;
- ``fraud_rate`` *f* = review items an operator **failed** (confirmed anomalies) ÷ sessions, at most 1;
- ``progress`` *g* = mean over the school's students of the mean over parts 1–4 of min(1, valid ÷ required minutes);
- **evaluation score** = 100 × (0.60 × (1 − *a*) + 0.25 × (1 − *f*) + 0.15 × *g*), one decimal.

Lists: **red** (红榜) when score ≥ 85, *a* ≤ 5 % and no confirmed anomaly; **black** (黑榜) when score < 60,
*a* ≥ 20 % or *f* ≥ 10 %; otherwise none. A school with fewer than :data:`MIN_JUDGED_MINUTES` judged minutes has no
score and is on no list ("insufficient_data"). Ranking: score, highest first; schools without a score last.
The weights put honest minutes first (what the hours are worth), confirmed fraud second, and students' progress
(the school actually teaching) third; students' own ratings of sessions will join when bookings and evaluations
exist (issue 7 names no evaluation table yet).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.api_schemas import SchoolFiguresPublic
from server.models import (
    ITEM_FAILED,
    ITEM_OPEN,
    HourTotal,
    Minute,
    ReviewItem,
    School,
    Student,
    Terminal,
    TrainingSession,
)
from server.policy import PARTS, Policy, PolicyError

MIN_JUDGED_MINUTES = 60
WEIGHT_VALID, WEIGHT_FRAUD, WEIGHT_PROGRESS = 0.60, 0.25, 0.15
RED_MIN_SCORE, RED_MAX_ANOMALY = 85.0, 0.05
BLACK_MAX_SCORE, BLACK_MIN_ANOMALY, BLACK_MIN_FRAUD = 60.0, 0.20, 0.10


def score(anomaly_rate: float, fraud_rate: float, progress: float) -> float:
    return round(100 * (WEIGHT_VALID * (1 - anomaly_rate) + WEIGHT_FRAUD * (1 - fraud_rate)
                        + WEIGHT_PROGRESS * progress), 1)  # fmt: skip


def which_list(judged: int, s: float | None, anomaly_rate: float, fraud_rate: float) -> str:
    if judged < MIN_JUDGED_MINUTES or s is None:
        return "insufficient_data"
    if s < BLACK_MAX_SCORE or anomaly_rate >= BLACK_MIN_ANOMALY or fraud_rate >= BLACK_MIN_FRAUD:
        return "black"
    if s >= RED_MIN_SCORE and anomaly_rate <= RED_MAX_ANOMALY and fraud_rate == 0:
        return "red"
    return "none"


def school_figures(db: Session, policy: Policy, schools: Iterable[str] | None) -> list[SchoolFiguresPublic]:
    """Figures of ``schools`` (None: every school), in id order."""
    q = select(School).order_by(School.id)
    if schools is not None:
        q = q.where(School.id.in_(list(schools)))
    rows = list(db.scalars(q))
    ids = [s.id for s in rows]
    minutes: dict[str, dict[bool | None, int]] = defaultdict(dict)  # school → verdict → minutes
    for school, verdict, n in db.execute(
        select(Terminal.school_id, Minute.valid, func.count()).select_from(Minute)
        .join(Terminal, Terminal.id == Minute.terminal_id)
        .where(Terminal.school_id.in_(ids)).group_by(Terminal.school_id, Minute.valid)
    ):  # fmt: skip
        minutes[school][verdict] = n
    sessions = dict(db.execute(
        select(Terminal.school_id, func.count()).select_from(TrainingSession)
        .join(Terminal, Terminal.id == TrainingSession.terminal_id)
        .where(Terminal.school_id.in_(ids)).group_by(Terminal.school_id)).all())  # fmt: skip
    items: dict[str, dict[str, int]] = defaultdict(dict)
    for school, status, n in db.execute(
        select(Terminal.school_id, ReviewItem.status, func.count()).select_from(ReviewItem)
        .join(Terminal, Terminal.id == ReviewItem.terminal_id)
        .where(Terminal.school_id.in_(ids)).group_by(Terminal.school_id, ReviewItem.status)
    ):  # fmt: skip
        items[school][status] = n
    students: dict[str, list[Student]] = defaultdict(list)
    for st in db.scalars(select(Student).where(Student.school_id.in_(ids))):
        students[st.school_id].append(st)
    totals: dict[str, dict[int, int]] = defaultdict(dict)
    for h in db.scalars(select(HourTotal).where(HourTotal.student_id.in_(select(Student.id)
                                                                           .where(Student.school_id.in_(ids))))):
        totals[h.student_id][h.part] = h.valid_minutes
    out: list[SchoolFiguresPublic] = []
    for s in rows:
        m = minutes.get(s.id, {})
        valid, invalid = m.get(True, 0), m.get(False, 0)
        judged = valid + invalid
        n_sessions = sessions.get(s.id, 0)
        failed = items.get(s.id, {}).get(ITEM_FAILED, 0)
        a = invalid / judged if judged else 0.0
        f = min(1.0, failed / n_sessions) if n_sessions else 0.0
        g = _progress(students.get(s.id, []), totals, policy)
        sc = score(a, f, g) if judged >= MIN_JUDGED_MINUTES else None
        out.append(SchoolFiguresPublic(
            school=s.id, name=s.name, students=len(students.get(s.id, [])), sessions=n_sessions,
            judged_minutes=judged, valid_minutes=valid, invalid_minutes=invalid,
            xueshi=round(valid / policy.minutes_per_xueshi, 1), anomaly_rate=round(a, 4),
            open_reviews=items.get(s.id, {}).get(ITEM_OPEN, 0), failed_reviews=failed, progress=round(g, 4), score=sc,
            list=which_list(judged, sc, a, f)))  # fmt: skip
    return out


def _progress(students: list[Student], totals: dict[str, dict[int, int]], policy: Policy) -> float:
    if not students:
        return 0.0
    per_student = []
    for st in students:
        parts = []
        for part in PARTS:
            try:
                required = policy.required_minutes(st.licence_class, part)
            except PolicyError:
                continue
            got = totals.get(st.id, {}).get(part, 0)
            parts.append(1.0 if required <= 0 else min(1.0, got / required))
        per_student.append(sum(parts) / len(parts) if parts else 0.0)
    return sum(per_student) / len(per_student)


def ranked(figures: list[SchoolFiguresPublic]) -> list[SchoolFiguresPublic]:
    """Highest score first; schools without a score last (by id). ``rank`` is 1-based among scored schools."""
    scored = sorted((f for f in figures if f.score is not None), key=lambda f: (-(f.score or 0.0), f.school))
    rest = sorted((f for f in figures if f.score is None), key=lambda f: f.school)
    return [f.model_copy(update={"rank": i + 1}) for i, f in enumerate(scored)] + rest
