"""The terminal's durable record store: SQLite (sqlite-utils), WAL, ``synchronous=FULL``.

A record is signed and committed in one transaction that also takes its chain sequence number and, for minutes,
its daily record number; only after COMMIT returns does it count (on screen, in sync). Records are never dropped
to make room: they stay until the server's application ack marks them ``acked`` (and acked ones are kept for
resend requests; pruning is by age, never of unacked rows).

Crash safety, step by step: a crash before COMMIT leaves no record and no sequence number used (the next start
reuses them, nothing was published); after COMMIT the record is on disk and will be sent; a crash after publishing
but before the ack was stored only causes a resend, which the server answers ``duplicate``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from agent.session import EmitRecord
from firmware_protocols import envelope
from firmware_protocols.identifiers import MAX_DAILY_SEQUENCE, RecordNumber, beijing_day
from firmware_protocols.messages import KeyVouch
from firmware_protocols.records import GENESIS_PREV, RecordKind, build_payload, record_hash, sign_record

log = logging.getLogger(__name__)

PENDING, ACKED, REJECTED = "pending", "acked", "rejected"


class StoreError(Exception):
    """The store cannot take a record (disk full, database unreadable): the caller must not count it."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    chain: int
    seq: int
    kind: str
    hash: str
    raw: bytes
    body: dict[str, Any]


class RecordStore:
    def __init__(self, path: Path, terminal: str, private_key: envelope.PrivateKey, chain_file: Path) -> None:
        self.path = path
        self.terminal = terminal
        self._key = private_key
        self._chain_file = chain_file
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the record store {path}: {exc}") from exc

    def _migrate(self) -> None:
        if "records" not in self.db.table_names():
            self.db.table("records").create(
                {"chain": int, "seq": int, "kind": str, "at": str, "hash": str, "raw": bytes, "body": str,
                 "status": str, "reason": str, "created_at": str, "acked_at": str},
                pk=("chain", "seq"),
            )  # fmt: skip
            self.db.table("records").create_index(["status", "chain", "seq"])
        if "daily_numbers" not in self.db.table_names():
            self.db.table("daily_numbers").create({"day": str, "last": int}, pk="day")

    # --- chain -------------------------------------------------------------------------------------------

    def head(self) -> tuple[int, int, str] | None:
        """(chain, seq, hash) of the newest record, or None for an empty store."""
        with self._lock:
            row = self.db.execute(
                "SELECT chain, seq, hash FROM records ORDER BY chain DESC, seq DESC LIMIT 1"
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), str(row[2]))

    def ensure_genesis(self, at: datetime) -> None:
        """Start a chain if the store is empty: chain 1 for a new terminal, C+1 when a database was lost."""
        if self.head() is not None:
            return
        previous = int(self._chain_file.read_text().strip()) if self._chain_file.exists() else 0
        chain = previous + 1
        body = {"public_key": envelope.public_key_to_pem(self._key.public_key()),
                "reason": "new" if previous == 0 else "database_lost",
                "previous_chain": previous or None}  # fmt: skip
        if previous:
            log.warning("record store %s is empty but chain %d existed: starting chain %d", self.path, previous, chain)
        self._append(chain, 0, GENESIS_PREV, EmitRecord(RecordKind.GENESIS, at, body))
        tmp = self._chain_file.with_suffix(".tmp")
        tmp.write_text(str(chain))
        tmp.replace(self._chain_file)

    def rotate_key(self, new_key: envelope.PrivateKey, at: datetime) -> StoredRecord:
        """Start chain C+1 signed by ``new_key``; its genesis carries the old key's vouch that ends chain C here.

        Atomic: the genesis commits with the new key or not at all (then the old key stays in use)."""
        head = self.head()
        if head is None:
            raise StoreError("no genesis yet: nothing to rotate")
        chain, last_seq, _ = head
        new_kid = envelope.key_id(new_key.public_key())
        vouch = KeyVouch(self.terminal, new_kid, chain + 1, chain, last_seq, at).sign(self._key)
        body = {"public_key": envelope.public_key_to_pem(new_key.public_key()), "reason": "key_rotation",
                "previous_chain": chain, "vouch": vouch}  # fmt: skip
        old = self._key
        self._key = new_key
        try:
            stored = self._append(chain + 1, 0, GENESIS_PREV, EmitRecord(RecordKind.GENESIS, at, body))
        except BaseException:
            self._key = old
            raise
        tmp = self._chain_file.with_suffix(".tmp")
        tmp.write_text(str(chain + 1))
        tmp.replace(self._chain_file)
        return stored

    def use_key(self, key: envelope.PrivateKey) -> None:
        with self._lock:
            self._key = key

    def newest_chain_key_id(self) -> str | None:
        """The key id that signed the newest chain's genesis (None for an empty store)."""
        with self._lock:
            row = self.db.execute("SELECT body FROM records WHERE seq = 0 ORDER BY chain DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return envelope.key_id(envelope.public_key_from_pem(json.loads(row[0])["public_key"]))

    def next_position(self) -> tuple[int, int]:
        head = self.head()
        if head is None:
            raise StoreError("no genesis yet")
        return head[0], head[1] + 1

    def append(self, action: EmitRecord) -> StoredRecord:
        head = self.head()
        if head is None:
            raise StoreError("no genesis yet")
        chain, seq, prev = head
        return self._append(chain, seq + 1, prev, action)

    def _append(self, chain: int, seq: int, prev: str, action: EmitRecord) -> StoredRecord:
        body = dict(action.body)
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    if action.needs_record_no:
                        body = {"record_no": self._next_record_no(action.at), **body}
                    payload = build_payload(action.kind, self.terminal, chain, seq, prev, action.at, body)
                    raw = sign_record(payload, self._key)
                    digest = record_hash(raw)
                    self.db.table("records").insert({
                        "chain": chain, "seq": seq, "kind": str(action.kind), "at": payload["at"], "hash": digest,
                        "raw": raw, "body": envelope.canonical_json(body).decode(), "status": PENDING,
                        "reason": None, "created_at": _now(), "acked_at": None})  # fmt: skip
                    self.db.execute("COMMIT")
                except BaseException:
                    if self.db.conn.in_transaction:  # SQLite rolls back by itself on SQLITE_FULL and some I/O errors
                        self.db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"record not stored ({exc}); it does not count") from exc
        return StoredRecord(chain, seq, str(action.kind), digest, raw, body)

    def _next_record_no(self, at: datetime) -> str:
        day = beijing_day(at)
        row = self.db.execute("SELECT last FROM daily_numbers WHERE day = ?", [day.isoformat()]).fetchone()
        n = (row[0] if row else 0) + 1
        if n > MAX_DAILY_SEQUENCE:
            raise StoreError(f"daily record numbers exhausted for {day}")
        self.db.execute("INSERT OR REPLACE INTO daily_numbers(day, last) VALUES (?, ?)", [day.isoformat(), n])
        return str(RecordNumber(self.terminal, day, n))

    # --- sync --------------------------------------------------------------------------------------------

    def pending(self, limit: int, after: tuple[int, int] | None = None) -> list[StoredRecord]:
        """Unacked, unrejected records in chain order, optionally after a (chain, seq) position."""
        where, args = "status = ?", [PENDING]
        if after is not None:
            where += " AND (chain > ? OR (chain = ? AND seq > ?))"
            args += [after[0], after[0], after[1]]  # type: ignore[list-item]
        with self._lock:
            rows = self.db.execute(
                f"SELECT chain, seq, kind, hash, raw, body FROM records WHERE {where} ORDER BY chain, seq LIMIT ?",  # noqa: S608
                [*args, limit],
            ).fetchall()
        return [_row(r) for r in rows]

    def records_between(self, chain: int, from_seq: int, to_seq: int | None) -> list[StoredRecord]:
        with self._lock:
            rows = self.db.execute(
                "SELECT chain, seq, kind, hash, raw, body FROM records WHERE chain = ? AND seq >= ? AND seq <= ?"
                " ORDER BY seq",
                [chain, from_seq, to_seq if to_seq is not None else 2**62],
            ).fetchall()
        return [_row(r) for r in rows]

    def mark(self, chain: int, seq: int, digest: str, status: str, reason: str | None = None) -> bool:
        """Record the server's verdict; only for the record whose hash the server names. True if it changed."""
        with self._lock:
            cur = self.db.execute(
                "UPDATE records SET status = ?, reason = ?, acked_at = ? WHERE chain = ? AND seq = ? AND hash = ?"
                " AND status = ?",
                [status, reason, _now(), chain, seq, digest, PENDING],
            )
            changed = cur.rowcount > 0
        if not changed:
            log.debug("ack for %d/%d (%s) matched no pending record", chain, seq, digest[:12])
        return changed

    def statuses(self, positions: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The status (pending, acked, rejected) of these (chain, seq): a photo is sent only once its record is
        acked."""
        if not positions:
            return {}
        where = " OR ".join("(chain = ? AND seq = ?)" for _ in positions)
        args = [x for p in positions for x in p]
        with self._lock:
            rows = self.db.execute(f"SELECT chain, seq, status FROM records WHERE {where}", args).fetchall()  # noqa: S608
        return {(int(r[0]), int(r[1])): str(r[2]) for r in rows}

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.db.execute("SELECT status, kind, count(*) FROM records GROUP BY status, kind").fetchall()
        out: dict[str, int] = {}
        for status, kind, n in rows:
            out[status] = out.get(status, 0) + n
            out[f"{kind}"] = out.get(f"{kind}", 0) + n
        return out

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()


def _row(r: Any) -> StoredRecord:
    return StoredRecord(int(r[0]), int(r[1]), str(r[2]), str(r[3]), bytes(r[4]), json.loads(r[5]))


def _now() -> str:
    return datetime.now(UTC).isoformat()
