"""The terminal's SQLite record store: signed, chained, numbered records that survive a restart."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.keys import PRIVATE_KEY_FILE, load_or_create_key
from agent.session import EmitRecord
from agent.store import ACKED, REJECTED, RecordStore
from firmware_protocols import envelope
from firmware_protocols.records import GENESIS_PREV, RecordKind, parse_record

T = "3710000000000001"
AT = datetime(2026, 11, 26, 15, 59, tzinfo=UTC)  # 23:59 Beijing: the next minute is a new Beijing day


def minute(at: datetime) -> EmitRecord:
    body = {"student": "3711020000000101", "coach": "3711020000000201", "course": "1212130000", "session": "s",
            "max_speed": 0, "distance_m": 0, "fix_count": 0, "fix30": None, "vehicle": None,
            "face": {"result": None, "seq": None}}  # fmt: skip
    return EmitRecord(RecordKind.MINUTE, at, body, needs_record_no=True)


def open_store(d: Path) -> RecordStore:
    return RecordStore(d / "records.sqlite", T, load_or_create_key(d), d / "chain")


def test_records_are_signed_chained_and_numbered_by_beijing_day(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.ensure_genesis(AT)
    a = store.append(minute(AT))
    b = store.append(minute(AT + timedelta(minutes=1)))
    c = store.append(minute(AT + timedelta(minutes=2)))
    pub = load_or_create_key(tmp_path).public_key()
    genesis, *rest = store.pending(10)
    prev = GENESIS_PREV
    for r in [genesis, *rest]:
        rec = parse_record(r.raw)
        envelope.verify(rec.envelope, pub)
        assert rec.prev == prev
        prev = rec.hash
    assert [x.body["record_no"] for x in (a, b, c)] == [f"{T}2611260001", f"{T}2611270001", f"{T}2611270002"]
    assert oct(os.stat(tmp_path / PRIVATE_KEY_FILE).st_mode & 0o777) == "0o600"


def test_restart_continues_the_chain_and_acks_need_the_right_hash(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.ensure_genesis(AT)
    first = store.append(minute(AT))
    store.close()
    store = open_store(tmp_path)
    store.ensure_genesis(AT)  # no second genesis
    second = store.append(minute(AT + timedelta(minutes=1)))
    assert (second.chain, second.seq) == (1, 2)
    assert parse_record(second.raw).prev == first.hash
    assert not store.mark(1, 1, "0" * 64, ACKED)  # an ack naming other bytes releases nothing
    assert store.mark(1, 1, first.hash, ACKED)
    assert store.mark(1, 2, second.hash, REJECTED, "bad_signature")
    assert [r.seq for r in store.pending(10)] == [0]


def test_a_lost_database_starts_a_new_chain(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.ensure_genesis(AT)
    store.close()
    (tmp_path / "records.sqlite").unlink()
    for extra in ("records.sqlite-wal", "records.sqlite-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    store = open_store(tmp_path)
    store.ensure_genesis(AT)
    (g,) = store.pending(10)
    assert g.chain == 2 and g.body["reason"] == "database_lost" and g.body["previous_chain"] == 1


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_key(tmp_path)
    os.chmod(tmp_path / PRIVATE_KEY_FILE, 0o644)
    with pytest.raises(PermissionError):
        load_or_create_key(tmp_path)
