"""Supervision figures of a school and the red/black list (红黑榜) that ranks schools by them.

Per school, over every minute recorded by its cars (terminals bound to the school), its students' ratings,
complaints and exam results (issue 13):

- ``xueshi`` = valid minutes ÷ the policy's ``minutes_per_xueshi`` (hours credited);
- ``anomaly_rate`` *a* = invalid minutes ÷ judged minutes;
- ``fraud_rate`` *f* = review items an operator **failed** (confirmed anomalies) ÷ sessions, at most 1;
- ``progress`` *g* = mean over the school's students of the mean over parts 1–4 of min(1, valid ÷ required minutes);
- ``evaluation`` *e* = (mean stars − 1) ÷ 4 over the ratings of the school's sessions (0 … 1);
- ``complaint_rate`` *c* = min(1, complaints ÷ students ÷ ``complaints_per_student_full`` ‰);
- ``pass_rate`` *p* = exams passed ÷ exams sat by the school's students (all parts).

**score** = 100 × Σ wᵢ·tᵢ ÷ Σ wᵢ over the terms t = (1 − *a*, 1 − *f*, *g*, *e*, 1 − *c*, *p*) that have data,
with the weights w of the policy's ``[ranking]`` (35/20/10/15/10/10 by default): *e* needs ``min_ratings``
ratings and *p* ``min_exams`` results, else their weight is shared out among the others (said in ``terms``).

Lists: **red** (红榜) when score ≥ ``red_min_score`` (85), *a* ≤ 5 % and no confirmed anomaly; **black** (黑榜) when
score < ``black_max_score`` (60), *a* ≥ 20 % or *f* ≥ 10 %; otherwise none. A school with fewer than
:data:`MIN_JUDGED_MINUTES` judged minutes has no score and is on no list ("insufficient_data"). Ranking: score,
highest first; schools without a score last. Figures are computed from the records on every request (the
"schedule" is every read: nothing to go stale), and ``terms`` explain each school's score.
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
    Complaint,
    ExamResult,
    HourTotal,
    Minute,
    Rating,
    ReviewItem,
    School,
    Student,
    Terminal,
    TrainingSession,
)
from server.policy import PARTS, Policy, PolicyError, RankingWeights

MIN_JUDGED_MINUTES = 60
RED_MIN_SCORE, RED_MAX_ANOMALY = 85.0, 0.05
BLACK_MAX_SCORE, BLACK_MIN_ANOMALY, BLACK_MIN_FRAUD = 60.0, 0.20, 0.10


def score(anomaly_rate: float, fraud_rate: float, progress: float, *, weights: RankingWeights | None = None,
          evaluation: float | None = None, complaint_rate: float = 0.0, pass_rate: float | None = None) -> float:
    return weighted(anomaly_rate, fraud_rate, progress, evaluation, complaint_rate, pass_rate,
                    weights or RankingWeights())[0]  # fmt: skip


def weighted(a: float, f: float, g: float, e: float | None, c: float, p: float | None,
             w: RankingWeights) -> tuple[float, dict[str, dict[str, float]]]:  # fmt: skip
    """The score and its explanation: each term's value, weight used (percent, after sharing out) and points."""
    terms: dict[str, tuple[float | None, int]] = {
        "valid": (1 - a, w.weight_valid), "no_fraud": (1 - f, w.weight_fraud), "progress": (g, w.weight_progress),
        "evaluation": (e, w.weight_evaluation), "few_complaints": (1 - c, w.weight_complaints),
        "pass_rate": (p, w.weight_pass_rate),
    }  # fmt: skip
    present = {k: (v, wt) for k, (v, wt) in terms.items() if v is not None}
    total = sum(wt for _v, wt in present.values()) or 1
    explained = {k: {"value": round(v, 4), "weight": round(100 * wt / total, 2), "points": round(100 * v * wt / total,
                                                                                                2)}
                 for k, (v, wt) in present.items()}  # fmt: skip
    return round(sum(100 * v * wt / total for v, wt in present.values()), 1), explained


def which_list(judged: int, s: float | None, anomaly_rate: float, fraud_rate: float,
               weights: RankingWeights | None = None) -> str:  # fmt: skip
    w = weights or RankingWeights()
    if judged < MIN_JUDGED_MINUTES or s is None:
        return "insufficient_data"
    if s < w.black_max_score or anomaly_rate >= BLACK_MIN_ANOMALY or fraud_rate >= BLACK_MIN_FRAUD:
        return "black"
    if s >= w.red_min_score and anomaly_rate <= RED_MAX_ANOMALY and fraud_rate == 0:
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
    ratings = {school: (n, mean) for school, n, mean in db.execute(
        select(Rating.school_id, func.count(), func.avg(Rating.stars)).where(Rating.school_id.in_(ids))
        .group_by(Rating.school_id))}  # fmt: skip
    complaints = dict(db.execute(select(Complaint.school_id, func.count()).where(Complaint.school_id.in_(ids))
                                 .group_by(Complaint.school_id)).all())  # fmt: skip
    exams: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))  # school→part→[n, pass]
    for ex_school, ex_part, ex_passed, ex_n in db.execute(
        select(ExamResult.school_id, ExamResult.part, ExamResult.passed, func.count())
        .where(ExamResult.school_id.in_(ids)).group_by(ExamResult.school_id, ExamResult.part, ExamResult.passed)
    ):  # fmt: skip
        if ex_school is None:
            continue
        exams[ex_school][ex_part][0] += ex_n
        exams[ex_school][ex_part][1] += ex_n if ex_passed else 0
    w = policy.ranking
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
        n_ratings, mean_stars = ratings.get(s.id, (0, None))
        e = (float(mean_stars) - 1) / 4 if n_ratings >= w.min_ratings and mean_stars is not None else None
        n_students = len(students.get(s.id, []))
        n_complaints = complaints.get(s.id, 0)
        c = min(1.0, n_complaints / n_students * 1000 / w.complaints_per_student_full) if n_students else 0.0
        sat = sum(v[0] for v in exams[s.id].values())
        n_passed = sum(v[1] for v in exams[s.id].values())
        p = n_passed / sat if sat >= w.min_exams else None
        sc, terms = weighted(a, f, g, e, c, p, w)
        sc_or_none = sc if judged >= MIN_JUDGED_MINUTES else None
        out.append(SchoolFiguresPublic(
            school=s.id, name=s.name, students=len(students.get(s.id, [])), sessions=n_sessions,
            judged_minutes=judged, valid_minutes=valid, invalid_minutes=invalid,
            xueshi=round(valid / policy.minutes_per_xueshi, 1), anomaly_rate=round(a, 4),
            open_reviews=items.get(s.id, {}).get(ITEM_OPEN, 0), failed_reviews=failed, progress=round(g, 4),
            score=sc_or_none, list=which_list(judged, sc_or_none, a, f, w), fraud_rate=round(f, 4),
            ratings=n_ratings, rating_mean=None if mean_stars is None else round(float(mean_stars), 2),
            complaints=n_complaints, complaint_rate=round(c, 4), exams=sat, exams_passed=n_passed,
            pass_rate=None if not sat else round(n_passed / sat, 4),
            pass_rates={str(k): round(v[1] / v[0], 4) for k, v in sorted(exams[s.id].items()) if v[0]},
            terms=terms))  # fmt: skip
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
