"""Fraud scenarios with faces (simulators.fraud_faces) through real ingest, the server's own face re-check (real face
engine, shipped demo faces) and the ledger on SQLite: each trick caught with its reason and queued for review, the
genuine sessions untouched, and the same verdicts whatever order records and photos arrive in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from jiapei_cli import fraud_report
from server import db
from server.models import Alarm, FaceVerdict, Minute, ReviewItem, School, Terminal
from server.photos import ALARM_DUPLICATE_PHOTO, ALARM_FACE_MISMATCH
from server.validation.reasons import REVIEW_REASONS
from simulators.fraud import SCHOOL
from simulators.fraud_faces import FACE_SCENARIOS, STUDENT_CLIP, FaceScenario, face_file

POLICY = fraud_report.POLICY  # national-2016 + the scenario school's teaching area

#: One arrival: a batch of records (bytes) or a photo message, of a terminal at a moment.
Event = tuple[datetime, int, str, Any]


@pytest.fixture(scope="module")
def engine() -> Any:
    from biometrics.engine import FaceEngine
    from biometrics.errors import EngineUnavailable

    if not face_file(STUDENT_CLIP).exists():
        pytest.skip(f"the shipped demo faces are missing ({face_file(STUDENT_CLIP)})")
    pytest.importorskip("cv2", reason="OpenCV reads the student's clip")
    try:
        return FaceEngine()
    except EngineUnavailable as exc:
        pytest.skip(f"face engine not usable: {exc}")


@pytest.fixture(scope="module")
def scenarios(engine: Any) -> dict[str, FaceScenario]:
    return {name: make() for name, make in FACE_SCENARIOS.items()}


def fresh_db(path: Path, scenario: FaceScenario, engine: Any) -> Any:
    """A database with the scenario's school, terminals and people, enrolled from their photos (real templates)."""
    _engine, sf = fraud_report.fresh_server_db(path)
    fraud_report.enrol(sf, scenario, fraud_report.face_templates(scenario, engine))
    return sf


def live(scenario: FaceScenario) -> list[Event]:
    """As terminals upload live: one batch per terminal and arrival moment, each photo after its record."""
    return fraud_report.in_arrival_order(scenario)


def feed(sf: Any, engine: Any, events: list[Event]) -> None:
    """Records through the ingestor, photos through PhotoIngest (the ledger judging after each), as the scenario
    report does; a photo answered "pending" is sent again after the consumer's ticker, as a terminal does."""
    fraud_report.feed(sf, events, POLICY, engine)


def verdicts(sf: Any) -> dict[str, tuple[bool | None, tuple[str, ...]]]:
    with sf() as s:
        return {m.record_no: (m.valid, tuple(m.reasons)) for m in s.scalars(select(Minute))}


@pytest.fixture(scope="module")
def live_runs(tmp_path_factory: pytest.TempPathFactory, engine: Any,
              scenarios: dict[str, FaceScenario]) -> dict[str, Any]:  # fmt: skip
    """Each scenario fed live, once, on its own database."""
    out = {}
    for name, scenario in scenarios.items():
        sf = fresh_db(tmp_path_factory.mktemp(name) / "server.db", scenario, engine)
        feed(sf, engine, live(scenario))
        out[name] = sf
    return out


@pytest.mark.parametrize("name", sorted(FACE_SCENARIOS))
def test_each_face_trick_is_caught_and_waits_in_the_review_queue(
    name: str, scenarios: dict[str, FaceScenario], live_runs: dict[str, Any]
) -> None:
    scenario, sf = scenarios[name], live_runs[name]
    assert scenario.expected in REVIEW_REASONS
    got = verdicts(sf)
    assert scenario.suspects and scenario.suspects <= set(got)
    for record_no in sorted(scenario.suspects):
        valid, reasons = got[record_no]
        assert valid is False and scenario.expected in reasons, (record_no, reasons)
    with sf() as s:
        items = list(s.scalars(select(ReviewItem)))
        assert items and all(i.status == "open" and scenario.expected in i.reasons for i in items)
        assert {no for i in items for no in i.records} == scenario.suspects
        assert len(list(s.scalars(select(FaceVerdict)))) == len(scenario.photos)  # every photo re-checked


@pytest.mark.parametrize("name", sorted(FACE_SCENARIOS))
def test_genuine_sessions_raise_no_false_alarm(
    name: str, scenarios: dict[str, FaceScenario], live_runs: dict[str, Any]
) -> None:
    """The control session, and reused_photo's first session (the original its copies were taken from)."""
    scenario, got = scenarios[name], verdicts(live_runs[name])
    genuine = set(got) - scenario.suspects
    assert scenario.control and scenario.control <= genuine
    assert {no: got[no] for no in genuine if got[no] != (True, ())} == {}


def test_the_server_saw_what_each_trick_left(scenarios: dict[str, FaceScenario], live_runs: dict[str, Any]) -> None:
    with live_runs["reused_photo"]() as s:
        copies = sorted(v.duplicate for v in s.scalars(select(FaceVerdict)) if v.duplicate)
        assert copies[0] == "exact" and len(copies) == 2 and copies[1] in ("near", "phash")
        assert [a.kind for a in s.scalars(select(Alarm).where(Alarm.kind == ALARM_DUPLICATE_PHOTO))] == [
            ALARM_DUPLICATE_PHOTO
        ] * 2
        assert {v.verdict for v in s.scalars(select(FaceVerdict))} == {"match"}
    other_student = scenarios["other_person_at_recheck"].students[1]
    with live_runs["other_person_at_recheck"]() as s:
        rejected = [v for v in s.scalars(select(FaceVerdict)) if v.verdict != "match"]
        assert [(v.verdict, v.terminal_result, v.trigger, v.other_person) for v in rejected] == [
            ("mismatch", "pass", "random", other_student)
        ]
        assert len(list(s.scalars(select(Alarm).where(Alarm.kind == ALARM_FACE_MISMATCH)))) == 1


def _photos_first(scenario: FaceScenario) -> list[Event]:
    """Every photo before any record (held pending), the records then all at once."""
    end = max(u.arrive_at for u in scenario.uploads)
    events = live(scenario)
    return [(end, 0, t, w) for _at, k, t, w in events if k == 1] + [(end, 1, t, w) for _at, k, t, w in events if k == 0]


def _copies_checked_first(scenario: FaceScenario) -> list[Event]:
    """The records all at once, then the photos newest first: the copies are re-checked before their originals."""
    end = max(u.arrive_at for u in scenario.uploads)
    events = live(scenario)
    records = [(end, 0, t, w) for _at, k, t, w in events if k == 0]
    return records + [(end, 1, t, w) for _at, k, t, w in reversed(events) if k == 1]


@pytest.mark.parametrize("order", [_photos_first, _copies_checked_first], ids=["photos_first", "copies_first"])
@pytest.mark.parametrize("name", sorted(FACE_SCENARIOS))
def test_any_order_of_records_and_photos_gives_the_same_verdicts(
    tmp_path: Path, engine: Any, scenarios: dict[str, FaceScenario], live_runs: dict[str, Any], name: str, order: Any
) -> None:
    scenario = scenarios[name]
    sf = fresh_db(tmp_path / "server.db", scenario, engine)
    feed(sf, engine, order(scenario))
    assert verdicts(sf) == verdicts(live_runs[name])
    assert queue(sf) == queue(live_runs[name])


def queue(sf: Any) -> list[tuple[str, str, list[str], list[str], str]]:
    with sf() as s:
        items = s.scalars(select(ReviewItem).order_by(ReviewItem.terminal_id, ReviewItem.session))
        return [(i.terminal_id, i.session, i.reasons, i.records, i.status) for i in items]


def test_scenario_photos_name_their_records(scenarios: dict[str, FaceScenario]) -> None:
    """Each photo message is the evidence JPEG of a face check that names its SHA-256 (as agent.photos sends)."""
    from firmware_protocols.messages import PhotoUpload
    from firmware_protocols.records import parse_record

    for scenario in scenarios.values():
        named = {}
        for u in scenario.uploads:
            rec = parse_record(u.raw)
            if rec.kind == "face_check" and "photo" in rec.body:
                named[(rec.chain, rec.seq)] = (rec.body["photo"], u.arrive_at)
        assert len(named) == len(scenario.photos)
        for p in scenario.photos:
            photo = PhotoUpload.decode(p.payload)
            assert photo.jpeg[:3] == b"\xff\xd8\xff"
            sha, record_arrives = named[(photo.chain, photo.seq)]
            assert sha == photo.sha256 == p.sha256 and p.arrive_at > record_arrives


def test_a_group_of_copies_is_read_both_ways_whichever_was_checked_first(tmp_path: Path) -> None:
    """Three copies of one picture, taken A < B < C, checked C first: A and B both link to C. Each session's
    findings still name C's and B's photos the copies; a copy checked after a later photo of its group has every
    session of the group judged again; links of a kind the policy does not count are not followed."""
    from server.face_evidence import session_findings, sessions_to_rejudge
    from server.validation.session import copied_refs

    url = f"sqlite:///{tmp_path / 'server.db'}"
    db.upgrade(url)
    sf = db.make_session_factory(db.make_engine(url))
    now, terminal = datetime(2026, 11, 27, tzinfo=UTC), "T000000000000001"
    taken = {"A": (1, now), "B": (2, now.replace(hour=1)), "C": (3, now.replace(hour=2))}
    with sf() as s, s.begin():
        s.add(School(id=SCHOOL, name="school", created_at=now))
        s.flush()
        s.add(Terminal(id=terminal, car_plate="鲁L0000学", school_id=SCHOOL, public_key="", key_id="k", status="active",
                       registered_at=now))  # fmt: skip
        s.flush()
        for name in ("C", "A", "B"):  # checking order
            seq, at = taken[name]
            s.add(FaceVerdict(terminal_id=terminal, chain=1, seq=seq, session=f"S{name}", person_id="P1",
                              role="student", trigger="random", photo_sha256=name * 64, terminal_result="pass",
                              terminal_distance=300, verdict="match", duplicate=None if name == "C" else "near",
                              duplicate_of=None if name == "C" else f"{terminal}/1/3", alarms=[], at=at,
                              checked_at=now, compute_ms=1))  # fmt: skip
            s.flush()
    ref = {name: f"{terminal}/1/{seq}" for name, (seq, _) in taken.items()}
    with sf() as s:
        for name in "ABC":
            found = session_findings(s, terminal, f"S{name}")
            assert copied_refs(found.copies, {"near"}) == {ref["B"], ref["C"]}, name
            assert session_findings(s, terminal, f"S{name}", {"exact"}).copies == ()
        assert sessions_to_rejudge(s, terminal, 1, 1) == {(terminal, "SA"), (terminal, "SB"), (terminal, "SC")}
        assert sessions_to_rejudge(s, terminal, 1, 3) == {(terminal, "SC")}  # no copy: its own session
