"""Fraud scenarios (simulators.fraud) through real ingest on SQLite: each trick caught with its reason code, the clean
fleet with no false alarm, and the same verdicts whatever order and batches the records arrive in."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from firmware_protocols import topics
from firmware_protocols.messages import RecordBatch
from server import db
from server.ingest import Ingestor
from server.ledger import Ledger
from server.models import (
    Coach,
    HourTotal,
    Minute,
    ReviewItem,
    School,
    Student,
    Terminal,
    TerminalKey,
    TrainingSession,
)
from server.policy import Policy, TeachingArea, load_builtin_policy
from simulators.fraud import SCENARIOS, SCHOOL, TEACHING_AREA, Scenario, Upload, clean_fleet

#: national-2016 with the scenario school's teaching area.
POLICY = replace(
    load_builtin_policy("national-2016"),
    teaching_areas=(TeachingArea(SCHOOL, frozenset({2, 3}), "training ground", TEACHING_AREA),),
)


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


def fresh_db(path: Path) -> Any:
    url = f"sqlite:///{path}"
    db.upgrade(url)
    return db.make_session_factory(db.make_engine(url))


def enrol(sf: Any, scenario: Scenario, vins: dict[str, str] | None = None) -> None:
    """People and terminals as the office enrols them (``vins``: the car VIN a terminal is bound to at enrolment)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with sf() as s, s.begin():
        s.add(School(id=SCHOOL, name="Fraud scenario school", created_at=now))
        s.flush()
        for c in scenario.coaches:
            s.add(Coach(id=c, name=c, school_id=SCHOOL, classes=["C1"], face_template="fr1:x", created_at=now))
        for p in scenario.students:
            s.add(Student(id=p, name=p, school_id=SCHOOL, licence_class="C1", face_template="fr1:y", created_at=now))
        for t, pem in scenario.terminals.items():
            from firmware_protocols import envelope

            kid = envelope.key_id(envelope.public_key_from_pem(pem))
            s.add(Terminal(id=t, car_plate="鲁L0000学", school_id=SCHOOL, public_key=pem, key_id=kid, status="active",
                           registered_at=now, vin=(vins or {}).get(t)))  # fmt: skip
            s.flush()
            s.add(TerminalKey(terminal_id=t, key_id=kid, public_key=pem, from_chain=1, added_at=now))


def feed(sf: Any, batches: list[tuple[datetime, str, list[bytes]]], policy: Policy = POLICY) -> None:
    clock = Clock()
    ledger = Ledger(sf, policy, clock)
    ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
    for n, (at, terminal, raws) in enumerate(batches):
        clock.t = at
        payload = RecordBatch(terminal, f"b{n}", tuple(raws)).encode()
        ack, _ = ingestor.handle_batch(topics.up_records(terminal), payload)
        assert ack is not None and ack.error is None
        assert all(r.status in ("stored", "duplicate") for r in ack.results), ack


def in_arrival_order(uploads: list[Upload]) -> list[tuple[datetime, str, list[bytes]]]:
    """One batch per terminal and arrival moment, in arrival order (as terminals upload live)."""
    groups: dict[tuple[datetime, str], list[bytes]] = defaultdict(list)
    for u in uploads:
        groups[(u.arrive_at, u.terminal)].append(u.raw)
    return [(at, t, raws) for (at, t), raws in sorted(groups.items(), key=lambda kv: kv[0])]


def verdicts(sf: Any) -> dict[str, tuple[bool | None, tuple[str, ...]]]:
    with sf() as s:
        return {m.record_no: (m.valid, tuple(m.reasons)) for m in s.scalars(select(Minute))}


def run(tmp_path: Path, scenario: Scenario) -> Any:
    sf = fresh_db(tmp_path / "server.db")
    enrol(sf, scenario)
    feed(sf, in_arrival_order(scenario.uploads))
    return sf


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    yield SCENARIOS[request.param]()


def test_each_trick_is_caught_with_its_reason(tmp_path: Path, scenario: Scenario) -> None:
    sf = run(tmp_path, scenario)
    got = verdicts(sf)
    assert scenario.suspects and scenario.suspects <= set(got)
    for record_no in sorted(scenario.suspects):
        valid, reasons = got[record_no]
        assert valid is False and scenario.expected in reasons, (record_no, reasons)


@pytest.mark.parametrize("name", ["teleport", "overlapping_student", "overlapping_coach", "clock_set_back",
                                  "backdated_backfill", "emulator_track"])  # fmt: skip
def test_suspected_fraud_waits_in_the_review_queue(tmp_path: Path, name: str) -> None:
    scenario = SCENARIOS[name]()
    sf = run(tmp_path, scenario)
    with sf() as s:
        items = list(s.scalars(select(ReviewItem)))
        assert items and all(i.status == "open" for i in items)
        assert any(scenario.expected in i.reasons for i in items)
        queued = {no for i in items for no in i.records}
        assert scenario.suspects <= queued


def test_a_replayed_track_leaves_the_original_valid(tmp_path: Path) -> None:
    """Only the copies are caught: the real session whose track the box replays stays valid, out of review."""
    scenario = SCENARIOS["emulator_track"]()
    sf = run(tmp_path, scenario)
    got = verdicts(sf)
    originals = {no: reasons for no, reasons in got.items() if no not in scenario.suspects}
    assert len(originals) == 40 and len(scenario.suspects) == 80
    assert all(valid and reasons == () for valid, reasons in originals.values()), originals
    with sf() as s:
        hashes = {m.record_no: m.track_hash for m in s.scalars(select(Minute))}
        queued = {no for i in s.scalars(select(ReviewItem)) for no in i.records}
    assert all(hashes.values()) and len(set(hashes.values())) == 40  # each original minute copied twice
    assert queued == scenario.suspects
    # the box idled the car while it fed the drive: the car's own speed says so too
    assert all("speed_mismatch" in got[no][1] for no in scenario.suspects)


def test_the_clean_fleet_raises_no_false_alarm(tmp_path: Path) -> None:
    scenario = clean_fleet()
    sf = run(tmp_path, scenario)
    got = verdicts(sf)
    flagged = {no: reasons for no, (valid, reasons) in got.items() if not valid}
    assert flagged == {}
    assert len(got) == 4 * 2 * 40
    with sf() as s:
        assert list(s.scalars(select(ReviewItem))) == []
        hashes = [m.track_hash for m in s.scalars(select(Minute))]
        assert all(hashes) and len(set(hashes)) == len(hashes)  # every minute moves, no two tracks alike
        sessions = list(s.scalars(select(TrainingSession)))
        assert len(sessions) == 8 and all(ts.reasons == [] and ts.valid_minutes == 40 for ts in sessions)


# -- order independence ------------------------------------------------------------------------------------------


def _mixed() -> Scenario:
    """The clean fleet and every trick in one database: overlaps, backdating and late backfill all interact."""
    fleet = clean_fleet(2)
    for make in SCENARIOS.values():
        other = make()
        fleet.terminals.update(other.terminals)
        fleet.students += other.students
        fleet.coaches += other.coaches
        fleet.uploads += other.uploads
    return fleet


MIXED = _mixed()


def totals(sf: Any) -> list[tuple[str, int, int, bool]]:
    with sf() as s:
        rows = s.scalars(select(HourTotal).order_by(HourTotal.student_id, HourTotal.part))
        return [(h.student_id, h.part, h.valid_minutes, h.complete) for h in rows]


def sessions(sf: Any) -> dict[tuple[str, str], tuple[int, int, tuple[str, ...]]]:
    with sf() as s:
        return {(t.terminal_id, t.session): (t.minutes_count, t.valid_minutes, tuple(t.reasons or []))
                for t in s.scalars(select(TrainingSession))}  # fmt: skip


@pytest.fixture(scope="module")
def in_order(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    sf = fresh_db(tmp_path_factory.mktemp("ordered") / "server.db")
    enrol(sf, MIXED)
    feed(sf, in_arrival_order(MIXED.uploads))
    return verdicts(sf), totals(sf), sessions(sf)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 100))
def test_any_order_and_batching_gives_the_same_verdicts(
    tmp_path_factory: pytest.TempPathFactory, in_order: tuple[Any, Any, Any], seed: int, batch: int
) -> None:
    rng = random.Random(seed)
    by_terminal: dict[str, list[Upload]] = defaultdict(list)
    for u in MIXED.uploads:
        by_terminal[u.terminal].append(u)
    chunks: list[list[Upload]] = []
    for ups in by_terminal.values():
        rng.shuffle(ups)
        size = rng.randint(1, batch)
        chunks += [ups[i : i + size] for i in range(0, len(ups), size)]
    rng.shuffle(chunks)
    # Everything arrives at one moment, after every record and inside the backfill window: the arrival-time rules
    # judge each record as they did when it arrived live.
    arrive = max(u.arrive_at for u in MIXED.uploads)
    sf = fresh_db(tmp_path_factory.mktemp("shuffled") / "server.db")
    enrol(sf, MIXED)
    feed(sf, [(arrive, c[0].terminal, [u.raw for u in c]) for c in chunks])
    expected_verdicts, expected_totals, expected_sessions = in_order
    assert verdicts(sf) == expected_verdicts
    assert totals(sf) == expected_totals
    assert sessions(sf) == expected_sessions


# -- review queue, decisions and the audit log through the API ---------------------------------------------------


def test_operator_decisions_are_logged_chained_and_survive_recomputation(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from server.api import create_app
    from server.settings import Settings

    scenario = SCENARIOS["overlapping_student"]()
    sf = run(tmp_path, scenario)
    app = create_app(Settings(admin_token="t0ken", database_url=f"sqlite:///{tmp_path / 'server.db'}"),  # noqa: S106
                     session_factory=sf, policy=POLICY)  # fmt: skip
    admin = {"Authorization": "Bearer t0ken"}
    with TestClient(app) as api:
        items = api.get("/api/review/items", headers=admin).json()
        assert len(items) == 2 and {r["code"] for i in items for r in i["reasons"]} >= {"student_overlap"}
        first, second = items
        target = f"{first['terminal']}/{first['session']}"
        decision = {"target_kind": "session", "target": target, "decision": "pass", "reason": "video shows the "
                    "student in this car", "operator": "regulator-1"}  # fmt: skip
        assert api.post("/api/review/decisions", json=decision).status_code == 401  # admin only
        assert api.post("/api/review/decisions", json=decision, headers=admin).status_code == 201
        other = {**decision, "target": f"{second['terminal']}/{second['session']}", "decision": "fail",
                 "reason": "card shared: the student was in the other car"}  # fmt: skip
        assert api.post("/api/review/decisions", json=other, headers=admin).status_code == 201
        minute = {**decision, "target_kind": "minute", "target": "T" * 26}
        assert api.post("/api/review/decisions", json=minute, headers=admin).status_code == 404
        assert api.get("/api/review/items", headers=admin).json() == []
        log = api.get("/api/review/log", headers=admin).json()
        assert log["ok"] and log["entries"] == 2
        assert log["decisions"][1]["prev_hash"] == log["decisions"][0]["hash"]
    with sf() as s:
        by_session = {(m.terminal_id, m.valid, m.status) for m in s.scalars(select(Minute))}
        assert by_session == {(first["terminal"], True, "manual_passed"), (second["terminal"], False, "manual_failed")}
    # recomputation from scratch keeps the operator's decisions
    ledger = Ledger(sf, POLICY, Clock())
    with sf() as s:
        ids = set(s.scalars(select(TrainingSession.id)))
    ledger.recompute_students(ledger.rejudge_sessions(ids))
    with sf() as s:
        assert {(m.terminal_id, m.valid, m.status) for m in s.scalars(select(Minute))} == by_session
        # the database refuses to edit a logged decision (tests/integration/test_append_only.py: and an edit behind
        # its back breaks the chain)
        from sqlalchemy.exc import DBAPIError

        from server.models import ReviewDecision

        row = s.scalar(select(ReviewDecision).where(ReviewDecision.id == 1))
        assert row is not None
        row.reason = "edited afterwards"
        with pytest.raises(DBAPIError, match="append-only"):
            s.flush()
        s.rollback()


def test_stage_review_waits_while_anything_of_the_part_is_under_review(tmp_path: Path) -> None:
    from server.models import StageReview

    small = replace(POLICY, part_hours={"C1": {1: 1, 2: 1, 3: 1, 4: 1}}, minutes_per_xueshi=30)
    scenario = SCENARIOS["overlapping_coach"]()  # the coach's students: 20 of 40 minutes under review each
    sf = fresh_db(tmp_path / "server.db")
    enrol(sf, scenario)
    feed(sf, in_arrival_order(scenario.uploads), small)
    with sf() as s:
        assert list(s.scalars(select(StageReview))) == []
        items = list(s.scalars(select(ReviewItem)))
    from server.review import append_decision

    ledger = Ledger(sf, small, Clock())
    for item in items:
        with sf() as s, s.begin():
            append_decision(s, target_kind="session", target=f"{item.terminal_id}/{item.session}", decision="pass",
                            reason="coach swapped cars; both sessions checked on video", operator="regulator-1",
                            at=datetime(2026, 11, 28, tzinfo=UTC))  # fmt: skip
        with sf() as s:
            sid = s.scalar(select(TrainingSession.id).where(TrainingSession.session == item.session))
        ledger.recompute_students(ledger.rejudge_sessions({sid}))
    with sf() as s:
        assert sorted(r.notice_id.rsplit("-", 1)[1] for r in s.scalars(select(StageReview))) == ["2", "2"]


def test_session_valid_minutes_follow_the_daily_cap(tmp_path: Path) -> None:
    """Found by the fault suite: the cap made minutes invalid but left the sessions' valid counts as before."""
    from collections import Counter

    capped_policy = replace(POLICY, daily_cap_minutes_practical=50)  # each clean student trains 2 × 40 minutes
    scenario = clean_fleet(cars=1)
    sf = fresh_db(tmp_path / "server.db")
    enrol(sf, scenario)
    feed(sf, in_arrival_order(scenario.uploads), capped_policy)
    with sf() as s:
        minutes = list(s.scalars(select(Minute)))
        valid = Counter(m.session_id for m in minutes if m.valid)
        sessions = {ts.id: ts.valid_minutes for ts in s.scalars(select(TrainingSession))}
    assert any("daily_cap" in m.reasons for m in minutes)
    assert sessions == {sid: valid.get(sid, 0) for sid in sessions}  # each session says what it really counts
