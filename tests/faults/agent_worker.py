"""An agent process for kill -9 tests: the real RecordStore and RecordSync, fed minute records as a session does.

``python tests/faults/agent_worker.py --data DIR --terminal ID --port P --tls CA CERT KEY --target N`` appends
sessions (login, minutes, logout) until the store holds N minute records, printing ``C chain seq`` on stdout only
after each record's COMMIT returned (that line is "counted on screen"), and syncs them. ``--drain`` appends nothing
and exits 0 once every record is acked. ``--die STAGE --die-after K`` kills the process itself (SIGKILL) at the
K-th passage through STAGE:

- ``before_commit``: the record's INSERT is done, its COMMIT statement is about to run (also the ack marks' COMMITs);
- ``mid_commit``: a thread sends SIGKILL 0–3 ms after a COMMIT started: inside the WAL write and its fsync;
- ``after_commit``: the record is committed and not yet counted;
- ``before_ack_mark``: the server's ack arrived and is not yet written;
- ``mid_checkpoint``: 0–5 ms into a ``wal_checkpoint(TRUNCATE)`` (run every 25 records).

Record times come from the chain position (``at_of``), so restarts continue the same timeline: 200 records a day
from 10:00 Beijing time, below the daily cap of 240 valid minutes (the cap is not what these tests are about).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import random
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent import sync as agent_sync
from agent.keys import load_or_create_key
from agent.session import EmitRecord
from agent.store import RecordStore
from agent.sync import RecordSync
from firmware_protocols.records import RecordKind

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
SESSION_MINUTES = 60
RECORDS_A_DAY = 200
CHECKPOINT_EVERY = 25
rng = random.Random()  # noqa: S311 - fault timing, not a secret


def at_of(seq: int) -> datetime:
    return T0 + timedelta(days=seq // RECORDS_A_DAY, minutes=seq % RECORDS_A_DAY)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Stage:
    def __init__(self, name: str | None, after: int) -> None:
        self.name, self.after, self.count = name, after, 0

    def hit(self, name: str) -> bool:
        if name != self.name:
            return False
        self.count += 1
        return self.count == self.after


def body(kind: str, session: str, minutes: int = 0) -> dict[str, Any]:
    base = {"student": "P000000000000001", "coach": "C000000000000001", "session": session}
    if kind == "login":
        return {**base, "course": "1212130000", "face": {"result": "pass", "distance": 300}}
    if kind == "logout":
        return {**base, "minutes": minutes}
    return {**base, "course": "1212130000", "max_speed": 250, "distance_m": 400, "fix_count": 60,
            "vehicle": {"rpm": 1800, "speed": 250, "ignition": True}, "face": {"result": "pass", "seq": None},
            "fix30": {"lat": 35420000, "lon": 119520000, "mode": 3, "sats": 9, "hdop": 9, "speed": 250}}  # fmt: skip


def minutes_in(store: RecordStore) -> int:
    return int(store.counts().get("minute", 0))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--terminal", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"), required=True)
    p.add_argument("--target", type=int, default=0)
    p.add_argument("--every-ms", type=float, default=2.0)
    p.add_argument("--drain", action="store_true")
    p.add_argument("--die", default=None)
    p.add_argument("--die-after", type=int, default=1)
    args = p.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test dumps a stuck worker's stacks
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker[{os.getpid()}] %(name)s: %(message)s")
    stage = Stage(args.die, args.die_after)

    agent_sync.ACK_TIMEOUT_S, agent_sync.RECONNECT_MIN_S, agent_sync.RECONNECT_MAX_S = 2.0, 0.2, 1  # type: ignore[assignment]
    key = load_or_create_key(args.data)
    store = RecordStore(args.data / "records.sqlite", args.terminal, key, args.data / "chain")

    def on_sql(statement: str) -> None:
        if statement.strip().upper().startswith("COMMIT"):
            if stage.hit("before_commit"):
                die()
            if stage.hit("mid_commit"):
                threading.Timer(rng.uniform(0, 0.003), die).start()

    store.db.conn.set_trace_callback(on_sql)
    ca, cert, tls_key = args.tls
    sync = RecordSync(store, args.terminal, "127.0.0.1", args.port, key, lambda r: None,
                      tls={"ca": ca, "cert": cert, "key": tls_key})  # fmt: skip
    handle_ack = sync._handle_ack

    def on_ack(ack: Any) -> None:
        if stage.hit("before_ack_mark"):
            die()
        handle_ack(ack)

    sync._handle_ack = on_ack  # type: ignore[method-assign]
    store.ensure_genesis(T0)
    sync.start()

    def append(kind: RecordKind, at: datetime, b: dict[str, Any], numbered: bool = False) -> None:
        stored = store.append(EmitRecord(kind, at, b, needs_record_no=numbered))
        if stage.hit("after_commit"):
            die()
        print(f"C {stored.chain} {stored.seq}", flush=True)  # noqa: T201 - the worker's report to the test
        sync.nudge()
        if stored.seq % CHECKPOINT_EVERY == 0:
            if stage.hit("mid_checkpoint"):
                threading.Timer(rng.uniform(0, 0.005), die).start()
            with store._lock:  # the store's connection is shared with the sync thread: never use it unlocked
                store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        time.sleep(args.every_ms / 1000)

    if not args.drain:
        while minutes_in(store) < args.target:  # one session per start: a crash abandons the open one
            chain, seq = store.next_position()
            sid = f"{args.terminal}-{chain}-{seq}"
            append(RecordKind.STUDENT_LOGIN, at_of(seq), body("login", sid))
            n = 0
            while n < SESSION_MINUTES and minutes_in(store) < args.target:
                _, seq = store.next_position()
                append(RecordKind.MINUTE, at_of(seq), body("minute", sid), numbered=True)
                n += 1
            _, seq = store.next_position()
            append(RecordKind.STUDENT_LOGOUT, at_of(seq), body("logout", sid, n))
    deadline = time.monotonic() + 120
    while store.pending(1) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the server's acks (another process)
    drained = not store.pending(1)
    print("DRAINED" if drained else "NOT-DRAINED", flush=True)  # noqa: T201
    sync.stop()
    store.close()
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
