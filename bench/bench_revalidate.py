"""Re-validate N stored minute records from scratch: the rules' throughput, in records per second.

What is timed is what a recomputation does per minute once rows are read: decode the stored ``minutes.facts`` JSON,
build the audit's facts (``server.ledger.facts_of``), and judge every session with the minute, session and
cross-terminal rules (``server.validation``) under the national-2016 policy plus a teaching area. Database reads are
not timed (``--db N`` also times the full ledger path on a SQLite file for N minutes, reads and writes included).

    .venv/bin/python bench/bench_revalidate.py [--minutes 1000000] [--db 20000]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.ledger import facts_of
from server.models import Minute
from server.policy import TeachingArea, load_builtin_policy
from server.validation.cross import MinuteSlot, backdated, overlaps
from server.validation.session import CHECK, SIGN_IN, SIGN_OUT, Photo, SessionFacts, judge_session

SCHOOL = "3711020000000009"
AREA = ((35.4150, 119.5150), (35.4150, 119.5250), (35.4250, 119.5250), (35.4250, 119.5150))
POLICY = replace(load_builtin_policy("national-2016"),
                 teaching_areas=(TeachingArea(SCHOOL, frozenset({2, 3}), "ground", AREA),))  # fmt: skip
SESSION = 40
T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


def stored_session(n: int) -> tuple[list[tuple[Minute, str]], SessionFacts]:
    """SESSION minutes of session ``n`` as stored rows with their facts as JSON text."""
    terminal = f"T{n % 1000:015d}"
    start = T0 + timedelta(days=n // 1000)
    rows = []
    for i in range(SESSION):
        at = start + timedelta(minutes=i)
        angle = n + i * 2.5
        fix = {"lat": round((35.42 + 100 * math.sin(angle) / 111_195) * 1e6),
               "lon": round((119.52 + 100 * math.cos(angle) / 90_600) * 1e6), "mode": 3, "sats": 10, "hdop": 8,
               "speed": 150, "t": (at + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
        facts = {"max_speed": 170, "distance_m": 250, "fix_count": 60, "fix30": fix, "rpm": 1500, "face_result": "pass"}
        m = Minute(record_no=f"{terminal}{at:%y%m%d}{i + 1:04d}", terminal_id=terminal, chain=1, seq=i + 5,
                   student_id=f"P{n:015d}", coach_id=f"C{n:015d}", course="1212130000", part=2, start=at,
                   facts={})  # fmt: skip
        rows.append((m, json.dumps(facts)))
    kinds = {0: SIGN_IN, SESSION: SIGN_OUT}  # as the agent takes them: sign-in, two re-checks, sign-out
    taken = (0, 10, 25, SESSION)
    photos = tuple(Photo(start + timedelta(minutes=k), True, kinds.get(k, CHECK), "match") for k in taken)
    return rows, SessionFacts(start, photos, start + timedelta(minutes=SESSION))


def revalidate(sessions: list[tuple[list[tuple[Minute, str]], SessionFacts]]) -> int:
    judged = 0
    for rows, session in sessions:
        facts = []
        for m, text in rows:
            m.facts = json.loads(text)
            facts.append(facts_of(m, "S", received_at=m.start + timedelta(minutes=2), school=SCHOOL,
                                  student_school=SCHOOL, coach_school=SCHOOL, coach_classes=("C1",)))  # fmt: skip
        slots = [MinuteSlot(f.record_no, f.terminal, f.student, f.coach, f.start) for f in facts]
        extra: dict[str, set[str]] = dict(overlaps(slots, []))
        for no in backdated([(m.seq, m.start, m.record_no) for m, _ in rows], None):
            extra.setdefault(no, set()).add("time_backwards")
        verdict = judge_session(facts, session, POLICY, extra)
        judged += len(verdict.minutes)
        assert all(v.valid for v in verdict.minutes), verdict.minutes[0]
    return judged


def bench_db(n: int) -> float:
    """The full ledger path (read rows, judge, write verdicts) for ``n`` minutes on a SQLite file."""
    from server import db
    from server.ledger import Ledger
    from server.models import School, Terminal, TrainingSession

    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 'bench.db'}"
        db.upgrade(url)
        sf = db.make_session_factory(db.make_engine(url))
        with sf() as s, s.begin():
            s.add(School(id=SCHOOL, name="bench", created_at=T0))
            ids = []
            for k in range(n // SESSION):
                rows, _ = stored_session(k)
                t = rows[0][0].terminal_id
                if s.get(Terminal, t) is None:
                    s.add(Terminal(id=t, car_plate="x", school_id=SCHOOL, public_key="-", key_id="-", status="active",
                                   registered_at=T0))  # fmt: skip
                    s.flush()
                ts = TrainingSession(terminal_id=t, session=f"S{k}", minutes_count=0, valid_minutes=0)
                s.add(ts)
                s.flush()
                ids.append(ts.id)
                for m, text in rows:
                    m.facts, m.session_id, m.reasons, m.valid = json.loads(text), ts.id, [], None
                    s.add(m)
        ledger = Ledger(sf, POLICY, lambda: T0)
        began = time.perf_counter()
        ledger.rejudge_sessions(ids)
        return (n // SESSION * SESSION) / (time.perf_counter() - began)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--minutes", type=int, default=1_000_000)
    p.add_argument("--db", type=int, default=0, help="also time the ledger on SQLite for this many minutes")
    args = p.parse_args()
    sessions = [stored_session(k) for k in range(args.minutes // SESSION)]
    began, cpu = time.perf_counter(), time.process_time()
    judged = revalidate(sessions)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(f"re-validated {judged} minutes in {seconds:.1f} s: {judged / seconds:,.0f} records/s (rules, one core;"  # noqa: T201
          f" {judged / cpu:,.0f}/s of this process's CPU time)")  # fmt: skip
    if args.db:
        print(f"ledger on SQLite, {args.db} minutes: {bench_db(args.db):,.0f} records/s (reads, rules, writes)")  # noqa: T201


if __name__ == "__main__":
    main()
