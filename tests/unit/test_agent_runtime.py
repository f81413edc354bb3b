"""The terminal runtime: a full disk holds records in order and loudly, and stores them when space returns."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.keys import load_or_create_key
from agent.runtime import TerminalRuntime
from agent.session import FaceOutcome, TrainingSession
from agent.store import RecordStore
from firmware_protocols import envelope
from firmware_protocols.nmea import GpsFix
from firmware_protocols.records import GENESIS_PREV, parse_record

T = "3710000000000001"
COACH, STUDENT = "3711020000000201", "3711020000000101"
T0 = datetime(2026, 11, 27, 0, 30, 0, tzinfo=UTC)


def wait_for(what: str, predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)  # polling the runtime's own thread
    raise AssertionError(f"timed out waiting for {what}")


def test_a_full_disk_loses_no_record(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    store = RecordStore(tmp_path / "records.sqlite", T, key, tmp_path / "chain")
    machine = TrainingSession(T, rng=random.Random(3))
    rt = TerminalRuntime(T, store, machine, None, tmp_path)
    rt.start()
    machine.coach_login(COACH, FaceOutcome("pass", COACH, 0.3), T0)  # straight into TRAINING: the fix path is
    machine.student_login(STUDENT, "1212130000", FaceOutcome("pass", STUDENT, 0.3), T0, 1, 1)  # what is tested
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now (SQLITE_FULL on the next page)
    for s in range(0, 6 * 60):
        rt.on_fix(GpsFix(T0 + timedelta(seconds=s), 35.42, 119.52 + s * 4e-5, 10.0, 4.0, 90.0, 3, 9, 0.9, True))
    wait_for("the store to fail", lambda: rt.store_failing and rt.status()["unstored"] >= 4)
    # What is held does not count on the screen: only what the store committed does.
    assert rt.status()["minutes"] == store.counts().get("minute", 0) < 5
    store.db.execute("PRAGMA max_page_count = 1073741823")  # space again
    wait_for("the held records to be stored", lambda: not rt.store_failing and rt.status()["unstored"] == 0)
    rt.stop()
    rows = store.pending(100)
    pub = key.public_key()
    prev = GENESIS_PREV
    for r in rows:
        rec = parse_record(r.raw)
        envelope.verify(rec.envelope, pub)
        assert rec.prev == prev
        prev = rec.hash
    minutes = [r for r in rows if r.kind == "minute"]
    assert [r.body["record_no"][-4:] for r in minutes] == ["0001", "0002", "0003", "0004", "0005"]
