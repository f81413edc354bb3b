"""Figures of the record path, one stage at a time: NMEA decoding, the terminal's sign+commit, server ingest.

    .venv/bin/python bench/bench_pipeline.py [--records 3000] [--database-url URL]

Prints one line per figure. Server ingest runs the real Ingestor and Ledger (signature, chain, idempotent insert,
re-judging and hour totals) on a fresh SQLite file (or the given database), in batches of 100 as the agent sends them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.session import EmitRecord
from agent.store import RecordStore
from firmware_protocols import envelope
from firmware_protocols.messages import MAX_BATCH_RECORDS, RecordBatch
from firmware_protocols.nmea import GpsFix, NmeaDecoder, nmea_sentences
from firmware_protocols.records import RecordKind
from server import db
from server.ingest import Ingestor
from server.ledger import Ledger
from server.models import Coach, School, Student, Terminal
from server.policy import load_builtin_policy

TERMINAL, SCHOOL, COACH, STUDENT = "3710000000000001", "3711020000000001", "3711020000000201", "3711020000000101"
T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
SHARED_LOGS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "nmea" / "gpsd"


def bench_nmea() -> None:
    if SHARED_LOGS.is_dir():
        data = b"".join(p.read_bytes() for p in sorted(SHARED_LOGS.glob("*.log"))) * 5
        source = f"{len(list(SHARED_LOGS.glob('*.log')))} real receiver logs ×5"
    else:
        fixes = [GpsFix(T0 + timedelta(seconds=i), 35.42, 119.52 + i * 1e-5, 10.0, 4.0, 90.0, 3, 9, 0.9, True)
                 for i in range(20_000)]  # fmt: skip
        data = b"".join(nmea_sentences(f) for f in fixes)
        source = "20,000 simulated epochs (../shared/testdata is absent)"
    sentences = data.count(b"\n")
    decoder = NmeaDecoder(comments=True)
    t = time.perf_counter()
    for i in range(0, len(data), 4096):
        decoder.receive_data(data[i : i + 4096])
        while decoder.next_event() is not None:
            pass
    elapsed = time.perf_counter() - t
    print(f"nmea decode        {sentences / elapsed:10,.0f} sentences/s  ({sentences:,} lines of {source})")


def minute(i: int) -> EmitRecord:
    body = {"student": STUDENT, "coach": COACH, "course": "1212120000", "session": f"{TERMINAL}-1-1",
            "max_speed": 150, "distance_m": 210, "fix_count": 60,
            "vehicle": {"rpm": 1600, "speed": 150, "ignition": True},
            "fix30": {"lat": 35420000 + i, "lon": 119520000, "mode": 3, "sats": 9, "hdop": 9, "speed": 150},
            "fixes": [[s, 35420000 + i, 119520000 + s, 150] for s in range(0, 60, 10)],
            "face": {"result": "pass", "seq": 2}}  # fmt: skip
    return EmitRecord(RecordKind.MINUTE, T0 + timedelta(minutes=i), body, needs_record_no=True)


def bench_agent(tmp: Path, n: int) -> tuple[RecordStore, list[bytes], envelope.PrivateKey]:
    from agent.keys import load_or_create_key

    key = load_or_create_key(tmp / "agent")
    store = RecordStore(tmp / "agent" / "records.sqlite", TERMINAL, key, tmp / "agent" / "chain")
    store.ensure_genesis(T0)
    store.append(EmitRecord(RecordKind.STUDENT_LOGIN, T0, {"student": STUDENT, "coach": COACH, "course": "1212120000",
                 "session": f"{TERMINAL}-1-1", "face": {"result": "pass", "distance": 300}}))  # fmt: skip
    t = time.perf_counter()
    for i in range(n):
        store.append(minute(i))
    elapsed = time.perf_counter() - t
    print(
        f"agent sign+commit  {n / elapsed:10,.0f} records/s  (Ed25519 + SQLite WAL synchronous=FULL, one commit each)"
    )
    raws = [r.raw for r in store.pending(n + 10)]
    return store, raws, key


def bench_server(url: str, raws: list[bytes], key: envelope.PrivateKey) -> None:
    db.upgrade(url)
    sf = db.make_session_factory(db.make_engine(url))
    now = datetime.now(UTC)
    with sf() as s, s.begin():
        s.add(School(id=SCHOOL, name="bench", created_at=now))
        s.flush()
        s.add(Coach(id=COACH, name="c", school_id=SCHOOL, classes=["C1"], face_template="fr1:x", photo_sha256=None,
                    created_at=now))  # fmt: skip
        s.add(Student(id=STUDENT, name="s", school_id=SCHOOL, licence_class="C1", face_template="fr1:y",
                      photo_sha256=None, created_at=now))  # fmt: skip
        s.add(Terminal(id=TERMINAL, car_plate="bench", school_id=SCHOOL, public_key=envelope.public_key_to_pem(
            key.public_key()), key_id=envelope.key_id(key.public_key()), status="active", registered_at=now,
            last_seen_at=None))  # fmt: skip
    ledger = Ledger(sf, load_builtin_policy("national-2016"), lambda: datetime.now(UTC))
    plain = Ingestor(sf, lambda: datetime.now(UTC))
    with_ledger = Ingestor(sf, lambda: datetime.now(UTC), after_commit=ledger.after_ingest)
    topic = f"jiapei/v1/terminals/{TERMINAL}/up/records"
    batches = [RecordBatch(TERMINAL, f"b{i}", tuple(raws[i : i + MAX_BATCH_RECORDS])).encode()
               for i in range(0, len(raws), MAX_BATCH_RECORDS)]  # fmt: skip
    half = len(batches) // 2
    for name, ingestor, part in (
        ("verify+store", plain, batches[:half]),
        ("+ judge+totals", with_ledger, batches[half:]),
    ):
        n = sum(len(RecordBatch.decode(b).records) for b in part)
        t = time.perf_counter()
        for b in part:
            ingestor.handle_batch(topic, b)
        elapsed = time.perf_counter() - t
        print(f"server {name:<12}{n / elapsed:10,.0f} records/s  ({n:,} records, {url.split(':')[0]})")
    t = time.perf_counter()
    for b in batches[:half]:
        plain.handle_batch(topic, b)
    n = sum(len(RecordBatch.decode(b).records) for b in batches[:half])
    print(f"server replay      {n / (time.perf_counter() - t):10,.0f} records/s  (all duplicates)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=3000)
    p.add_argument("--database-url", default=None)
    args = p.parse_args()
    bench_nmea()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store, raws, key = bench_agent(tmp, args.records)
        store.close()
        bench_server(args.database_url or f"sqlite:///{tmp / 'server.sqlite'}", raws, key)


if __name__ == "__main__":
    main()
