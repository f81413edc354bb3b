"""Backlog drain: a terminal back after 7 days offline (7 × 10 h × 60 minute records) until every record is acked.

    .venv/bin/python bench/bench_backlog.py [--days 7] [--hours 10] [--database-url URL | --postgres]

The real agent side (:class:`agent.store.RecordStore` filled by ``append``, then :class:`agent.sync.RecordSync` with
its batch size and in-flight window) against the real TLS broker and ONE ingest worker
(:class:`server.mqtt_consumer.IngestConsumer`, verify → store → COMMIT → ack) on a fresh database. The clock runs
from the moment sync starts until the store holds no pending record: every record signed, sent, verified, stored,
acked and marked acked on the terminal. Printed beside it: the target (10 s) and the verify ceiling for the same
number of records, measured in the same run. Photos: the agent syncs none yet (no ``up/photos`` sender), so the
backlog is records only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import SERVER_IDENTITY, verify_ceiling  # noqa: E402
from harness import TestTerminal, conftest, enrol, machine, migrated, start_mosquitto, throwaway_postgres  # noqa: E402

from agent.keys import load_or_create_key  # noqa: E402
from agent.session import EmitRecord  # noqa: E402
from agent.store import RecordStore  # noqa: E402
from agent.sync import RecordSync  # noqa: E402
from firmware_protocols.records import RecordKind  # noqa: E402

TARGET_S = 10.0
TERMINAL = "T000000000000077"
#: Training days start at 08:00 Beijing time (00:00 UTC); two sessions of five hours a day.
DAY0 = datetime(2026, 11, 16, 0, 0, tzinfo=UTC)


def fill(store: RecordStore, days: int, hours: int) -> int:
    store.ensure_genesis(DAY0)
    who = {"student": conftest.STUDENT, "coach": conftest.COACH, "course": conftest.COURSE_C1_PART2}
    n = 1
    for d in range(days):
        for half in range(2):
            start = DAY0 + timedelta(days=d, hours=half * hours / 2)
            session = f"{TERMINAL}-{d}-{half}"
            face = {"result": "pass", "seq": None}
            store.append(EmitRecord(RecordKind.STUDENT_LOGIN, start, {**who, "session": session, "face": face}))
            minutes = hours * 60 // 2
            for m in range(minutes):
                body = {**who, "session": session, "max_speed": 250, "distance_m": 300, "fix_count": 60,
                        "fix30": {"lat": 35_416_000 + m, "lon": 119_527_000, "mode": 3, "sats": 9, "hdop": 9,
                                  "speed": 250},
                        "vehicle": {"rpm": 1800, "speed": 250, "ignition": True},
                        "face": {"result": "pass", "seq": 1}}  # fmt: skip
                store.append(EmitRecord(RecordKind.MINUTE, start + timedelta(minutes=m), body, needs_record_no=True))
            store.append(EmitRecord(RecordKind.STUDENT_LOGOUT, start + timedelta(minutes=minutes),
                                    {"student": conftest.STUDENT, "coach": conftest.COACH, "session": session,
                                     "minutes": minutes, "face": face}))  # fmt: skip
            n += minutes + 2
    return n


def drain(url: str, days: int, hours: int, tmp: Path) -> None:
    from server.ingest import Ingestor
    from server.mqtt_consumer import IngestConsumer

    key = load_or_create_key(tmp / "agent")
    store = RecordStore(tmp / "agent" / "records.sqlite", TERMINAL, key, tmp / "agent" / "chain")
    t = time.perf_counter()
    n = fill(store, days, hours)
    print(f"backlog: {n:,} records ({days} days × {hours} h × 60 minutes + sign-ins/outs) signed and committed on the "
          f"terminal in {time.perf_counter() - t:.1f} s (not part of the drain)")  # fmt: skip
    sf = migrated(url)
    enrol(sf, TestTerminal(id=TERMINAL, key=key))
    broker = start_mosquitto(tmp)
    consumer = IngestConsumer(Ingestor(sf, lambda: datetime.now(UTC)), sf, broker.host, broker.port,
                              client_id=SERVER_IDENTITY, tls=broker.context(SERVER_IDENTITY),
                              resend_check_seconds=3600)  # fmt: skip
    consumer.start()
    sync = RecordSync(store, TERMINAL, broker.host, broker.port, key, lambda _r: None, tls=broker.tls(TERMINAL))
    try:
        if not consumer.subscribed.wait(30):
            raise RuntimeError("the worker did not subscribe")
        t = time.perf_counter()
        sync.start()
        while store.pending(1):
            if time.perf_counter() - t > 600:
                raise RuntimeError(f"not drained after 600 s: {store.counts()}")
            time.sleep(0.02)  # polling the terminal's store, the thing being measured
        elapsed = time.perf_counter() - t
    finally:
        sync.stop()
        consumer.stop()
        broker.process.terminate()
        broker.process.wait(5)
        store.close()
    ceiling = verify_ceiling(1.0)["cryptography (raw verify)"]
    acked = store_counts(tmp)
    print(f"drain ({url.split(':')[0]}): {n:,} records acked in {elapsed:.2f} s = {n / elapsed:,.0f} records/s; "
          f"target ≤ {TARGET_S:.0f} s ({'met' if elapsed <= TARGET_S else 'MISSED'}); "
          f"verify ceiling for {n:,} records: {n / ceiling:.2f} s ({ceiling:,.0f} verifies/s); "
          f"{sync.stats.batches_sent} batches of ≤ {sync.batch_size}; terminal store: {acked}")  # fmt: skip


def store_counts(tmp: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(tmp / "agent" / "records.sqlite") as conn:
        return dict(conn.execute("SELECT status, count(*) FROM records GROUP BY status").fetchall())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--hours", type=int, default=10)
    p.add_argument("--database-url")
    p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database at 127.0.0.1:5432")
    args = p.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        if args.postgres:
            with throwaway_postgres() as url:
                if url is not None:
                    drain(url, args.days, args.hours, Path(d))
        else:
            drain(args.database_url or f"sqlite:///{d}/server.db", args.days, args.hours, Path(d))


if __name__ == "__main__":
    main()
