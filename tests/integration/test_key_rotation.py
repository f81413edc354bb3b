"""Key rotation: the agent's store starts a chain signed by the new key with the old key's vouch; the server adopts it,
closes the old chain, refuses the old key from then on, and keeps every earlier record verifiable."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import T0, TestTerminal
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from agent import keys
from agent.session import EmitRecord
from agent.store import RecordStore
from firmware_protocols import envelope, topics
from firmware_protocols.messages import AckStatus, KeyVouch, RecordBatch
from firmware_protocols.records import GENESIS_PREV, RecordKind, build_payload, record_hash, sign_record
from server.audit import audit_terminal
from server.ingest import ALARM_BAD_VOUCH, ALARM_KEY_ROTATION, Ingestor
from server.models import Alarm, Chain, Terminal


def _event(at: Any, n: int) -> EmitRecord:
    return EmitRecord(RecordKind.EVENT, at, {"event": f"e{n}"})


def _send(ingestor: Ingestor, terminal: str, raws: list[bytes]) -> list[Any]:
    ack, _ = ingestor.handle_batch(topics.up_records(terminal), RecordBatch(terminal, "b", tuple(raws)).encode())
    assert ack is not None
    return list(ack.results)


def _kinds(sf: Any, kind: str) -> list[Alarm]:
    with sf() as s:
        return list(s.scalars(select(Alarm).where(Alarm.kind == kind)))


def test_rotation_is_adopted_and_the_old_key_retired(tmp_path: Path, enrolled: Any, terminal: TestTerminal) -> None:
    store = RecordStore(tmp_path / "r.sqlite", terminal.id, terminal.key, tmp_path / "chain")
    store.ensure_genesis(T0)
    before = [store.append(_event(T0, i)) for i in range(3)]
    new_key = Ed25519PrivateKey.generate()
    rotation = store.rotate_key(new_key, T0 + timedelta(minutes=5))
    after = [store.append(_event(T0 + timedelta(minutes=6), i)) for i in range(2)]
    assert (rotation.chain, rotation.seq) == (2, 0) and after[0].chain == 2
    ingestor = Ingestor(enrolled, lambda: T0)

    # The new chain arrives before its rotation genesis (another worker, a reordered batch): not answered yet.
    assert _send(ingestor, terminal.id, [after[0].raw]) == []
    old_chain = [r.raw for r in store.records_between(1, 0, None)]
    assert {r.status for r in _send(ingestor, terminal.id, old_chain)} == {AckStatus.STORED}
    results = _send(ingestor, terminal.id, [rotation.raw, *(r.raw for r in after)])
    assert {r.status for r in results} == {AckStatus.STORED}
    with enrolled() as s:
        t = s.get(Terminal, terminal.id)
        assert t is not None and t.key_id == envelope.key_id(new_key.public_key())
        closed = s.get(Chain, (terminal.id, 1))
        assert closed is not None and closed.closed_after_seq == before[-1].seq
    assert _kinds(enrolled, ALARM_KEY_ROTATION)

    # The old key (say it was copied off the box) can neither extend the closed chain nor sign in the new one.
    thief = TestTerminal(id=terminal.id, key=terminal.key, chain=1, seq=before[-1].seq + 1, prev=before[-1].hash)
    extend = _send(ingestor, terminal.id, [thief.record(RecordKind.EVENT, {"event": "x"}, T0)])
    assert extend[0].status is AckStatus.REJECTED and extend[0].reason == "chain_closed"
    thief = TestTerminal(id=terminal.id, key=terminal.key, chain=2, seq=3, prev=after[-1].hash)
    intrude = _send(ingestor, terminal.id, [thief.record(RecordKind.EVENT, {"event": "x"}, T0)])
    assert intrude[0].status is AckStatus.REJECTED and intrude[0].reason == "unknown_key"

    with enrolled() as s:  # every record of both keys still verifies
        report = audit_terminal(s, terminal.id)
    assert report is not None and report["records"] == report["verified"] == 7 and report["failures"] == []
    store.close()


def test_a_rotation_not_vouched_by_the_old_key_is_refused(enrolled: Any, terminal: TestTerminal) -> None:
    ingestor = Ingestor(enrolled, lambda: T0)
    assert {r.status for r in _send(ingestor, terminal.id, [terminal.genesis()])} == {AckStatus.STORED}
    usurper = Ed25519PrivateKey.generate()
    forged_vouch = KeyVouch(terminal.id, envelope.key_id(usurper.public_key()), 2, 1, 0, T0).sign(usurper)
    body = {"public_key": envelope.public_key_to_pem(usurper.public_key()), "reason": "key_rotation",
            "previous_chain": 1, "vouch": forged_vouch}  # fmt: skip
    raw = sign_record(build_payload(RecordKind.GENESIS, terminal.id, 2, 0, GENESIS_PREV, T0, body), usurper)
    result = _send(ingestor, terminal.id, [raw])[0]
    assert result.status is AckStatus.REJECTED and result.reason == "bad_vouch"
    assert _kinds(enrolled, ALARM_BAD_VOUCH)
    with enrolled() as s:
        assert s.get(Terminal, terminal.id).key_id == terminal.key_id  # type: ignore[union-attr]
    assert record_hash(raw)  # the refused record was never stored (see the audit below)
    with enrolled() as s:
        report = audit_terminal(s, terminal.id)
    assert report is not None and report["records"] == 1


def test_a_rotation_cut_short_is_finished_or_undone_at_start(tmp_path: Path, terminal: TestTerminal) -> None:
    data = tmp_path / "agent"
    key = keys.load_or_create_key(data)
    store = RecordStore(data / "records.sqlite", terminal.id, key, data / "chain")
    store.ensure_genesis(T0)
    # Crash after the next key was written, before the genesis committed: the next key is discarded.
    keys.begin_rotation(data)
    keys.recover_rotation(data, store.newest_chain_key_id())
    assert not (data / keys.NEXT_KEY_FILE).exists()
    assert envelope.key_id(keys.load_or_create_key(data).public_key()) == envelope.key_id(key.public_key())
    # Crash after the genesis committed, before the key file was replaced: the next key is adopted.
    new = keys.begin_rotation(data)
    store.rotate_key(new, T0)
    keys.recover_rotation(data, store.newest_chain_key_id())
    assert envelope.key_id(keys.load_or_create_key(data).public_key()) == envelope.key_id(new.public_key())
    assert (data / keys.PRIVATE_KEY_FILE).stat().st_mode & 0o777 == 0o600
    store.close()


def test_rotate_key_command(tmp_path: Path, terminal: TestTerminal) -> None:
    data = tmp_path / "agent"
    key = keys.load_or_create_key(data)
    store = RecordStore(data / "records.sqlite", terminal.id, key, data / "chain")
    store.ensure_genesis(T0)
    with keys.exclusive(data):  # a running agent holds the directory: the command refuses
        busy = subprocess.run([sys.executable, "-m", "jiapei_cli.main", "agent", "rotate-key", "--data-dir", str(data),
                               "--terminal", terminal.id], capture_output=True, text=True, check=False)  # fmt: skip
    assert busy.returncode == 1 and "another agent" in busy.stderr
    done = subprocess.run([sys.executable, "-m", "jiapei_cli.main", "agent", "rotate-key", "--data-dir", str(data),
                           "--terminal", terminal.id], capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert store.head() is not None and store.head()[:2] == (2, 0)  # type: ignore[index]
    assert store.newest_chain_key_id() == envelope.key_id(keys.load_or_create_key(data).public_key())
    store.close()
