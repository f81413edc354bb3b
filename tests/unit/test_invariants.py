"""The invariant checker (tools.invariants) must be able to fail: it finds planted losses, duplicates and double counts.

Both ends are real: an agent RecordStore filled as the session machine fills it, and a migrated server database fed
by the Ingestor and Ledger directly (no broker needed to plant faults).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, TestTerminal
from sqlalchemy import text

from agent.store import ACKED, RecordStore
from firmware_protocols.messages import AckStatus, RecordBatch
from firmware_protocols.records import RecordKind
from server.ingest import Ingestor
from server.ledger import Ledger
from server.policy import load_builtin_policy
from tools import invariants
from tools.invariants import check

SESSION = "T000000000000001-1-1"


def _store(tmp_path: Path, terminal: TestTerminal) -> RecordStore:
    from agent.session import EmitRecord

    store = RecordStore(tmp_path / "agent" / "records.sqlite", terminal.id, terminal.key, tmp_path / "agent" / "chain")
    store.ensure_genesis(T0)
    body = {"student": "P000000000000001", "coach": "C000000000000001", "course": "1212130000", "session": SESSION}
    store.append(EmitRecord(RecordKind.STUDENT_LOGIN, T0, {**body, "face": {"result": "pass", "distance": 300}}))
    for i in range(12):
        minute = {**body, "max_speed": 250, "distance_m": 400, "fix_count": 60, "face": {"result": "pass", "seq": None},
                  "vehicle": {"rpm": 1800, "speed": 250, "ignition": True},
                  "fix30": {"lat": 35420000, "lon": 119520000, "mode": 3, "sats": 9, "hdop": 9, "speed": 250}}
        store.append(EmitRecord(RecordKind.MINUTE, T0 + timedelta(minutes=i), minute, needs_record_no=True))
    store.append(EmitRecord(RecordKind.STUDENT_LOGOUT, T0 + timedelta(minutes=12),
                            {"student": body["student"], "coach": body["coach"], "session": SESSION, "minutes": 12,
                             "face": {"result": "pass", "distance": 310}}))  # the sign-out photo
    return store


def _sync_directly(store: RecordStore, sf: Any, terminal: TestTerminal) -> None:
    """What RecordSync and IngestConsumer do, without a broker: batch, ingest, mark acked."""
    clock = lambda: datetime.now(UTC)  # noqa: E731
    ledger = Ledger(sf, load_builtin_policy("demo"), clock)
    ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
    pending = store.pending(1000)
    ack, _ = ingestor.handle_batch(f"jiapei/v1/terminals/{terminal.id}/up/records",
                                   RecordBatch(terminal.id, "b1", tuple(r.raw for r in pending)).encode())  # fmt: skip
    assert ack is not None
    for r in ack.results:
        assert r.status is AckStatus.STORED
        store.mark(r.chain, r.seq, r.hash, ACKED)


@pytest.fixture
def synced(tmp_path: Path, enrolled: Any, terminal: TestTerminal) -> tuple[Path, Any]:
    store = _store(tmp_path, terminal)
    _sync_directly(store, enrolled, terminal)
    store.close()
    return tmp_path / "agent" / "records.sqlite", enrolled


def _exec(sf: Any, sql: str, **params: Any) -> None:
    with sf() as s, s.begin():
        s.execute(text(sql), params)


def test_a_clean_sync_is_all_zero(synced: tuple[Path, Any], terminal: TestTerminal) -> None:
    db, sf = synced
    report = check([db], sf.url)
    t = report.terminals[terminal.id]
    assert (t.produced, t.produced_minutes, t.stored) == (15, 12, 15)
    assert (t.missing, t.duplicated, t.mismatched, t.chain_breaks, t.double_counted, t.unjudged) == (0, 0, 0, 0, 0, 0)
    assert report.ok and not report.hour_totals and not report.integrity
    report.assert_clean()


def test_a_planted_missing_record_is_found(synced: tuple[Path, Any], terminal: TestTerminal) -> None:
    db, sf = synced
    _exec(sf, "DELETE FROM minutes WHERE seq = 5")
    _exec(sf, "DELETE FROM raw_records WHERE seq = 5")
    report = check([db], sf.url)
    t = report.terminals[terminal.id]
    assert t.missing == 1 and t.missing_acked == 1  # acked by the server, then gone: the worst loss
    assert t.chain_breaks == 1  # a hole on the server below the agent's acked records
    assert not report.ok
    with pytest.raises(AssertionError, match="1/5"):
        report.assert_clean()


def test_a_planted_duplicate_row_is_found(synced: tuple[Path, Any], terminal: TestTerminal) -> None:
    """The schema's unique keys forbid it; the checker does not rely on them (a database restored or migrated by
    hand may lack them): the table is rebuilt without its constraint and a record inserted twice."""
    db, sf = synced
    with sqlite3.connect(sf.url.removeprefix("sqlite:///")) as conn:  # foreign keys off: other tables refer to it
        conn.execute("CREATE TABLE raw_copy AS SELECT * FROM raw_records")
        conn.execute("DROP TABLE raw_records")
        conn.execute("ALTER TABLE raw_copy RENAME TO raw_records")
        conn.execute("INSERT INTO raw_records SELECT * FROM raw_records WHERE seq = 3")
    report = check([db], sf.url)
    assert report.terminals[terminal.id].duplicated == 1 and report.duplicated == 1
    assert not report.ok


def test_a_planted_double_count_is_found(synced: tuple[Path, Any], terminal: TestTerminal) -> None:
    db, sf = synced
    _exec(sf, "UPDATE hour_totals SET valid_minutes = valid_minutes + 1 WHERE part = 2")
    report = check([db], sf.url)
    assert len(report.hour_totals) == 1 and report.double_counted == 1 and not report.ok


def test_the_same_minute_counted_in_a_second_session_is_found(synced: tuple[Path, Any], terminal: TestTerminal) -> None:
    """A replayed minute under a fresh record number in another session: the student's same minute counted twice."""
    db, sf = synced
    with sf() as s, s.begin():
        s.execute(text("INSERT INTO sessions (terminal_id, session, minutes_count, valid_minutes) "
                       "VALUES (:t, 'other', 1, 1)"), {"t": terminal.id})  # fmt: skip
        sid = s.execute(text("SELECT id FROM sessions WHERE session = 'other'")).scalar_one()
        s.execute(text("INSERT INTO minutes (record_no, terminal_id, chain, seq, session_id, student_id, coach_id, "
                       "course, part, start, facts, valid, reasons, judged_at) SELECT :no, terminal_id, chain, seq, "
                       ":sid, student_id, coach_id, course, part, start, facts, valid, reasons, judged_at FROM minutes "
                       "WHERE seq = 4"), {"no": f"{terminal.id}2611279999", "sid": sid})  # fmt: skip
    report = check([db], sf.url)
    t = report.terminals[terminal.id]
    assert t.double_counted >= 1 and any("counted valid 2 times" in p for p in t.problems)
    assert report.hour_totals  # and the student's total no longer matches… unless recomputed: either way found
    assert not report.ok


def test_an_unjudged_minute_and_a_broken_agent_chain_are_found(
    synced: tuple[Path, Any], terminal: TestTerminal
) -> None:
    db, sf = synced
    _exec(sf, "UPDATE minutes SET valid = NULL, judged_at = NULL WHERE seq = 6")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM records WHERE seq = 8")
    report = check([db], sf.url)
    t = report.terminals[terminal.id]
    assert t.unjudged == 1
    assert t.chain_breaks >= 1 and any("hole" in p for p in t.problems)
    assert not report.ok


def test_pending_records_are_missing_until_they_sync(tmp_path: Path, enrolled: Any, terminal: TestTerminal) -> None:
    store = _store(tmp_path, terminal)
    store.close()
    report = check([tmp_path / "agent" / "records.sqlite"], enrolled.url)
    t = report.terminals[terminal.id]
    assert t.missing == t.produced == t.pending == 15 and t.missing_acked == 0


def test_the_command_prints_the_table_and_fails_on_a_broken_invariant(
    synced: tuple[Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db, sf = synced
    assert invariants.main(["--agent-db", str(db), "--database-url", sf.url]) == 0
    assert "OK" in capsys.readouterr().out
    _exec(sf, "DELETE FROM raw_records WHERE seq = 2")
    assert invariants.main(["--agent-db", str(db), "--database-url", sf.url, "--json"]) == 1
    assert '"ok": false' in capsys.readouterr().out
