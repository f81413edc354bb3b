"""Ingest on a temp SQLite file: verification, idempotent acks, tamper alarms, gaps, resends, lost notices."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import STUDENT, T0, TestTerminal, enrol
from sqlalchemy import func, select

from firmware_protocols import topics
from firmware_protocols.messages import Ack, AckStatus, Command, RecordBatch
from firmware_protocols.records import RecordKind, build_payload, record_hash, sign_record
from server.ingest import Ingestor
from server.ledger import Ledger
from server.models import Alarm, Chain, Minute, RawRecord, Rejection, StageReview, TrainingSession
from server.policy import load_builtin_policy


class FakeClock:
    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ingestor(enrolled: Any, clock: FakeClock) -> Ingestor:
    ledger = Ledger(enrolled, load_builtin_policy("demo"), clock)
    return Ingestor(enrolled, clock, resend_grace=timedelta(seconds=30), after_commit=ledger.after_ingest)


def up(t: TestTerminal) -> str:
    return topics.up_records(t.id)


def statuses(ack: Ack | None) -> list[str]:
    assert ack is not None
    return [str(r.status) for r in ack.results]


def count(sf: Any, model: Any, *where: Any) -> int:
    with sf() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def alarms(sf: Any) -> list[str]:
    with sf() as s:
        return [a.kind for a in s.scalars(select(Alarm).order_by(Alarm.id))]


def test_genesis_and_records_in_order_are_stored_raw(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    records = [terminal.genesis(), *terminal.session(T0, 3)]
    ack, outcomes = ingestor.handle_batch(up(terminal), terminal.batch(records, "batch-1"))
    assert ack is not None and ack.batch == "batch-1" and ack.error is None
    assert statuses(ack) == ["stored"] * 6
    assert [r.hash for r in ack.results] == [record_hash(r) for r in records]
    assert [o.kind for o in outcomes] == ["genesis", "student_login", "minute", "minute", "minute", "student_logout"]
    with enrolled() as s:
        stored = list(s.scalars(select(RawRecord).order_by(RawRecord.seq)))
        assert [r.raw for r in stored] == records  # the exact bytes received
        chain = s.get(Chain, (terminal.id, 1))
        assert chain is not None and chain.contiguous_seq == 5 and chain.max_seq == 5 and chain.gap_since is None
        assert chain.genesis_hash == record_hash(records[0])
        ts = s.scalar(select(TrainingSession))
        assert ts is not None and ts.student_id == STUDENT and ts.minutes_count == 3 and ts.declared_minutes == 3
        minutes = list(s.scalars(select(Minute)))
        assert len(minutes) == 3 and all(m.valid is True and m.part == 2 for m in minutes)
    assert alarms(enrolled) == []


def test_shuffled_batches_give_the_same_result(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    records = [terminal.genesis(), *terminal.session(T0, 8)]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    for i in range(0, len(shuffled), 3):
        ack, _ = ingestor.handle_batch(up(terminal), terminal.batch(shuffled[i : i + 3]))
        assert set(statuses(ack)) == {"stored"}
    with enrolled() as s:
        chain = s.get(Chain, (terminal.id, 1))
        assert chain is not None and chain.contiguous_seq == len(records) - 1 and chain.gap_since is None
        assert [m.valid for m in s.scalars(select(Minute))] == [True] * 8
    assert alarms(enrolled) == []


def test_duplicate_gets_the_same_ack_and_counts_once(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    records = [terminal.genesis(), *terminal.session(T0, 2)]
    payload = terminal.batch(records, "b-dup")
    first, _ = ingestor.handle_batch(up(terminal), payload)
    again, _ = ingestor.handle_batch(up(terminal), payload)
    assert first is not None and again is not None
    assert statuses(again) == ["duplicate"] * len(records)
    assert [(r.chain, r.seq, r.hash) for r in again.results] == [(r.chain, r.seq, r.hash) for r in first.results]
    assert count(enrolled, RawRecord) == len(records) and count(enrolled, Minute) == 2


def test_fork_is_rejected_with_an_alarm(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    g = terminal.genesis()
    ingestor.handle_batch(up(terminal), terminal.batch([g, terminal.login(T0)]))
    terminal.seq, terminal.prev = 1, record_hash(g)  # sign another record under seq 1
    other = terminal.login(T0 + timedelta(seconds=5), session="S2")
    ack, outcomes = ingestor.handle_batch(up(terminal), terminal.batch([other]))
    assert ack is not None and ack.results[0].status is AckStatus.REJECTED and ack.results[0].reason == "fork"
    assert outcomes[0].alarm == "fork" and alarms(enrolled) == ["fork"]
    assert count(enrolled, RawRecord) == 2


def test_bad_signature_is_rejected(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    impostor = TestTerminal(id=terminal.id)  # same number, another key
    ack, _ = ingestor.handle_batch(up(terminal), impostor.batch([impostor.genesis()]))
    assert ack is not None and ack.results[0].status is AckStatus.REJECTED
    assert ack.results[0].reason in {"unknown_key", "bad_signature"}
    # an edited payload under a valid header and signature
    raw = terminal.genesis()
    h, p, sig = raw.split(b".")
    forged = h + b"." + p[:-2] + (b"AA" if p[-2:] != b"AA" else b"BB") + b"." + sig
    ack2, _ = ingestor.handle_batch(up(terminal), terminal.batch([forged]))
    assert ack2 is not None and ack2.results[0].status is AckStatus.REJECTED
    assert alarms(enrolled).count("bad_signature") >= 1 and count(enrolled, RawRecord) == 0


def test_unknown_terminal_is_rejected_with_one_alarm(ingestor: Ingestor, enrolled: Any) -> None:
    stranger = TestTerminal(id="T999999999999999")
    ack, _ = ingestor.handle_batch(up(stranger), stranger.batch([stranger.genesis(), stranger.login(T0)]))
    assert statuses(ack) == ["rejected", "rejected"]
    assert ack is not None and {r.reason for r in ack.results} == {"unknown_terminal"}
    assert alarms(enrolled) == ["unknown_terminal"]
    with enrolled() as s:
        assert s.get(Rejection, "unknown_terminal").count == 2  # type: ignore[union-attr]


def test_topic_terminal_mismatch(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    other = TestTerminal(id="T000000000000002")
    enrol(enrolled, other)
    # terminal 2 publishes a batch claiming to be terminal 1
    payload = RecordBatch(terminal.id, "bx", (terminal.genesis(),)).encode()
    ack, _ = ingestor.handle_batch(up(other), payload)
    assert ack is not None and ack.error == "terminal_mismatch" and ack.results == ()
    # a batch naming itself but carrying another terminal's record
    foreign = TestTerminal(id=terminal.id, key=terminal.key)
    ack2, _ = ingestor.handle_batch(up(other), RecordBatch(other.id, "by", (foreign.genesis(),)).encode())
    assert ack2 is not None and ack2.results[0].reason == "terminal_mismatch"
    assert alarms(enrolled) == ["foreign_publish", "foreign_publish"] and count(enrolled, RawRecord) == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_json"),
        (b'{"v":2,"batch":"x"}', "unsupported_version"),
        (b"\xff\xfe", "bad_json"),
        (b'{"v":1,"terminal":"T000000000000001","batch":"b","records":[]}', "bad_batch"),
    ],
)
def test_malformed_batch_gets_an_error_ack(ingestor: Ingestor, enrolled: Any, payload: bytes, reason: str) -> None:
    ack, outcomes = ingestor.handle_batch(topics.up_records("T000000000000001"), payload)
    assert ack is not None and ack.error == reason and outcomes == []
    with enrolled() as s:
        assert s.get(Rejection, reason).count == 1  # type: ignore[union-attr]


def test_malformed_and_unknown_version_records(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    from firmware_protocols import envelope

    bad_v = envelope.sign(
        {**build_payload(RecordKind.GENESIS, terminal.id, 1, 0, "0" * 64, T0, {}), "v": 9},
        terminal.key,
        "jiapei.record.v1",
    )
    ack, _ = ingestor.handle_batch(up(terminal), terminal.batch([b"not.a.jws", bad_v]))
    assert ack is not None and [r.reason for r in ack.results] == ["bad_json", "unsupported_version"]
    assert ack.results[1].chain == 1 and ack.results[1].seq == 0


def test_chain_break_both_directions(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    g = terminal.genesis()
    ingestor.handle_batch(up(terminal), terminal.batch([g]))
    terminal.prev = "1" * 64  # seq 1 names a wrong predecessor
    bad = terminal.login(T0)
    ack, _ = ingestor.handle_batch(up(terminal), terminal.batch([bad]))
    assert ack is not None and ack.results[0].reason == "chain_break"
    # out of order: seq 3 arrives first, then a seq 2 whose hash is not what seq 3 names
    t2 = TestTerminal(id="T000000000000002")
    enrol(enrolled, t2)
    recs = [t2.genesis(), t2.login(T0), t2.minute(T0), t2.minute(T0 + timedelta(minutes=1))]
    ingestor.handle_batch(up(t2), t2.batch([recs[3]]))
    t2.seq, t2.prev = 2, record_hash(recs[1])
    impostor_seq2 = t2.minute(T0, session="S9")
    ack2, _ = ingestor.handle_batch(up(t2), t2.batch([impostor_seq2]))
    assert ack2 is not None and ack2.results[0].reason == "chain_break"
    ack3, _ = ingestor.handle_batch(up(t2), t2.batch(recs[:3]))
    assert statuses(ack3) == ["stored"] * 3
    assert alarms(enrolled) == ["chain_break", "chain_break"]


def test_gap_asks_for_resend_after_grace_once_per_grace(
    ingestor: Ingestor, enrolled: Any, terminal: TestTerminal, clock: FakeClock
) -> None:
    records = [terminal.genesis(), *terminal.session(T0, 5)]  # seq 0..7
    ingestor.handle_batch(up(terminal), terminal.batch(records[:2] + records[4:]))  # seqs 2, 3 missing
    assert ingestor.due_resends(clock()) == []
    clock.advance(seconds=29)
    assert ingestor.due_resends(clock()) == []
    clock.advance(seconds=2)
    due = ingestor.due_resends(clock())
    assert due == [(terminal.id, Command.resend(1, 2, 3))]
    clock.advance(seconds=10)
    assert ingestor.due_resends(clock()) == []  # not again within the grace period
    clock.advance(seconds=25)
    assert ingestor.due_resends(clock()) == [(terminal.id, Command.resend(1, 2, 3))]
    ack, _ = ingestor.handle_batch(up(terminal), terminal.batch(records[2:4]))
    assert statuses(ack) == ["stored", "stored"]
    clock.advance(seconds=60)
    assert ingestor.due_resends(clock()) == []
    with enrolled() as s:
        chain = s.get(Chain, (terminal.id, 1))
        assert chain is not None and chain.contiguous_seq == 7 and chain.gap_since is None


def test_lost_notice_raises_alarm_and_stops_resends(
    ingestor: Ingestor, enrolled: Any, terminal: TestTerminal, clock: FakeClock
) -> None:
    records = [terminal.genesis(), *terminal.session(T0, 5)]
    ingestor.handle_batch(up(terminal), terminal.batch(records[:2] + records[5:]))  # 2..4 missing
    clock.advance(seconds=31)
    assert ingestor.due_resends(clock()) == [(terminal.id, Command.resend(1, 2, 4))]
    assert ingestor.handle_notice(topics.up_notices(terminal.id), terminal.lost(2, 3)) is True
    assert alarms(enrolled) == ["lost_records"]
    clock.advance(seconds=31)
    assert ingestor.due_resends(clock()) == [(terminal.id, Command.resend(1, 4, 4))]
    ingestor.handle_message(topics.up_notices(terminal.id), terminal.lost(4, 4))
    clock.advance(seconds=31)
    assert ingestor.due_resends(clock()) == []
    # a forged notice (another key) is refused with an alarm
    forger = TestTerminal(id=terminal.id)
    assert ingestor.handle_notice(topics.up_notices(terminal.id), forger.lost(5, 6)) is False
    assert alarms(enrolled)[-1] == "bad_signature"


def test_duplicate_record_number_under_another_seq(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    recs = [terminal.genesis(), terminal.login(T0), terminal.minute(T0)]
    reused = terminal.minute(T0 + timedelta(minutes=1), record_no=f"{terminal.id}2611270001")
    ack, _ = ingestor.handle_batch(up(terminal), terminal.batch([*recs, reused]))
    assert statuses(ack) == ["stored", "stored", "stored", "rejected"]
    assert ack is not None and ack.results[3].reason == "duplicate_record_no"
    assert count(enrolled, Minute) == 1


def test_new_chain_genesis_and_wrong_genesis_key(ingestor: Ingestor, enrolled: Any, terminal: TestTerminal) -> None:
    ingestor.handle_batch(up(terminal), terminal.batch([terminal.genesis()]))
    terminal.new_chain()
    ack, _ = ingestor.handle_batch(
        up(terminal), terminal.batch([terminal.genesis(reason="database_lost", previous_chain=1)])
    )
    assert statuses(ack) == ["stored"] and alarms(enrolled) == ["new_chain"]
    # a genesis signed by the registered key but naming another public key
    terminal.new_chain()
    other = TestTerminal()
    body = {"public_key": other.public_pem, "reason": "first_start", "previous_chain": None}
    raw = sign_record(
        build_payload(RecordKind.GENESIS, terminal.id, terminal.chain, 0, "0" * 64, T0, body), terminal.key
    )
    ack2, _ = ingestor.handle_batch(up(terminal), terminal.batch([raw]))
    assert ack2 is not None and ack2.results[0].reason == "genesis_key_mismatch"


def test_invalid_minutes_carry_reasons_and_part_completion_enqueues_one_stage_review(
    ingestor: Ingestor, enrolled: Any, terminal: TestTerminal
) -> None:
    # demo policy: C1 part 2 needs 3 学时 × 5 min = 15 valid minutes
    records = [terminal.genesis(), *terminal.session(T0, 10)]
    parked = terminal.session(T0 + timedelta(hours=1), 3, session="S2", speed=0, distance=0)
    ingestor.handle_batch(up(terminal), terminal.batch(records + parked))
    with enrolled() as s:
        bad = list(s.scalars(select(Minute).where(Minute.valid.is_(False))))
        assert len(bad) == 3 and all("stationary" in m.reasons for m in bad)
    assert count(enrolled, StageReview) == 0
    more = terminal.session(T0 + timedelta(hours=2), 5, session="S3")
    ingestor.handle_batch(up(terminal), terminal.batch(more))
    with enrolled() as s:
        reviews = list(s.scalars(select(StageReview)))
        assert len(reviews) == 1 and reviews[0].notice_id == f"{STUDENT}-2" and reviews[0].status == "pending"
        assert reviews[0].notice["valid_minutes"] == 15 and len(reviews[0].notice["records"]) == 15
    ingestor.handle_batch(up(terminal), terminal.batch(terminal.session(T0 + timedelta(hours=3), 2, session="S4")))
    assert count(enrolled, StageReview) == 1
