"""Days offline, backpressure, a full disk and an exam system down for a day."""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker, TestTerminal, enrol
from sqlalchemy import select, text

from agent.session import Action, EmitRecord, TrainingSession
from agent.store import RecordStore
from agent.sync import RecordSync
from faults.harness import T0, ServerStack, append_session, fill, finish, minute_body, wait_for
from firmware_protocols.identifiers import RecordNumber, beijing_day
from firmware_protocols.records import RecordKind

log = logging.getLogger(__name__)
BACKLOG = int(os.environ.get("JIAPEI_BACKLOG", "2000"))


def _store(tmp_path: Path, terminal: TestTerminal, name: str = "agent") -> RecordStore:
    return RecordStore(tmp_path / name / "records.sqlite", terminal.id, terminal.key, tmp_path / name / "chain")


def _sync(store: RecordStore, terminal: TestTerminal, broker: Broker) -> RecordSync:
    sync = RecordSync(store, terminal.id, "127.0.0.1", broker.port, terminal.key, lambda r: None,
                      tls=broker.tls(terminal.id))  # fmt: skip
    sync.start()
    return sync


def _judged(sf: Any) -> bool:
    with sf() as s:
        return not s.execute(text("SELECT count(*) FROM minutes WHERE judged_at IS NULL")).scalar()


def test_three_days_offline_then_reconnect_across_midnight(tmp_path: Path, broker: Broker, enrolled: Any,
                                                           terminal: TestTerminal, fast_retries: None) -> None:
    """Each day a morning session and an evening one from 23:00 to 01:00 Beijing time: record numbers take the date
    of the minute (not of the sync), daily sequences restart at midnight, the daily cap counts per day."""
    store = _store(tmp_path, terminal)
    day0 = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # 09:00 Beijing
    sessions = []
    for d in range(3):
        sessions += [(day0 + timedelta(days=d), 180), (day0 + timedelta(days=d, hours=14), 120)]  # 23:00 → 01:00
    total = 1 + fill(store, sessions)
    server = ServerStack(enrolled, broker.port, broker.pki).start()
    started = time.monotonic()
    sync = _sync(store, terminal, broker)
    try:
        wait_for("the 3-day backlog acked", lambda: not store.pending(1), 120)
        drained = time.monotonic() - started
        wait_for("every minute judged", lambda: _judged(enrolled), 30)
    finally:
        sync.stop()
        server.stop()
    with enrolled() as s:
        rows = s.execute(text("SELECT record_no, start FROM minutes")).all()
    per_day: dict[str, list[int]] = {}
    for no, start in rows:
        n = RecordNumber.parse(no)
        assert n.day == beijing_day(datetime.fromisoformat(str(start)).replace(tzinfo=UTC))
        per_day.setdefault(n.day.isoformat(), []).append(n.sequence)
    assert len(per_day) == 4  # three days and the early hours of the fourth
    assert all(sorted(v) == list(range(1, len(v) + 1)) for v in per_day.values())
    report = finish("3 days offline, backlog across midnight", 1, [store.path], enrolled, started,
                    f"{total} records drained in {drained:.1f} s ({total / drained:.0f}/s)")  # fmt: skip
    assert report.total("produced") == total


def _backpressure(tmp_path: Path, broker: Broker, sf: Any, backlog: int) -> None:
    """Terminal A returns with ``backlog`` records; terminal B records a minute every 0.1 s meanwhile. B's records
    must be acked within a bounded time while A drains, and A drains at a bounded rate (MAX_IN_FLIGHT batches)."""
    a, b = TestTerminal(id="T000000000000021"), TestTerminal(id="T000000000000022")
    enrol(sf, a)
    enrol(sf, b)
    store_a, store_b = _store(tmp_path, a, "a"), _store(tmp_path, b, "b")
    day0 = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
    fill(store_a, [(day0 + timedelta(days=i // 3, hours=i % 3 * 2), min(100, backlog - i * 100))
                   for i in range((backlog + 99) // 100)])  # fmt: skip
    store_b.ensure_genesis(T0)
    server = ServerStack(sf, broker.port, broker.pki).start()
    sync_a, sync_b = _sync(store_a, a, broker), _sync(store_b, b, broker)
    latencies: list[float] = []
    rates: list[float] = []
    started = time.monotonic()
    try:
        chain, seq = store_b.next_position()
        sid = f"{b.id}-{chain}-{seq}"
        store_b.append(EmitRecord(RecordKind.STUDENT_LOGIN, T0, {"student": "P000000000000001", "coach":
                       "C000000000000001", "course": "1212130000", "session": sid, "face": {"result": "pass"}}))
        i = 0
        last_acked, last_t = 0, time.monotonic()
        while store_a.pending(1) and time.monotonic() - started < 150:
            stored = store_b.append(EmitRecord(RecordKind.MINUTE, T0 + timedelta(minutes=i), minute_body(sid),
                                               needs_record_no=True))  # fmt: skip
            sync_b.nudge()
            t0 = time.monotonic()
            wait_for("B's live record acked", lambda: not store_b.pending(1), 30, interval=0.01)
            latencies.append(time.monotonic() - t0)
            assert stored.seq >= 1
            i += 1
            now = time.monotonic()
            if now - last_t >= 1:
                acked = store_a.counts().get("acked", 0)
                rates.append((acked - last_acked) / (now - last_t))
                last_acked, last_t = acked, now
            time.sleep(0.1)
        drained = time.monotonic() - started
        wait_for("A drained", lambda: not store_a.pending(1), 60)
        wait_for("every minute judged", lambda: _judged(sf), 30)
    finally:
        sync_a.stop()
        sync_b.stop()
        server.stop()
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 20 else max(latencies)
    note = (f"A {backlog} drained in {drained:.1f} s, peak {max(rates, default=0):.0f} rec/s; B live ack p50 "
            f"{statistics.median(latencies) * 1000:.0f} ms p95 {p95 * 1000:.0f} ms max {max(latencies) * 1000:.0f} ms")
    log.warning(note)
    finish(f"backpressure: {backlog} backlog vs live terminal", len(latencies), [store_a.path, store_b.path], sf,
           started, note)  # fmt: skip
    assert p95 < 5.0 and max(latencies) < 10.0, note


def test_a_backlog_does_not_starve_another_terminals_live_records(tmp_path: Path, broker: Broker, server_db: Any,
                                                                  fast_retries: None) -> None:  # fmt: skip
    _backpressure(tmp_path, broker, server_db, BACKLOG)


@pytest.mark.soak
def test_a_10k_backlog_does_not_starve_live_records(tmp_path: Path, broker: Broker, server_db: Any,
                                                    fast_retries: None) -> None:  # fmt: skip
    _backpressure(tmp_path, broker, server_db, 10_000)


# ------------------------------------------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs when this machine lets us mount one (root), else a plain directory (then SQLite's
    ``max_page_count`` plays the full disk)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],  # noqa: S607
                        capture_output=True, check=False).returncode == 0  # fmt: skip
    yield mount if ok else Path(str(mount) + "-nomount")
    if ok:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # noqa: S607


def test_disk_full_on_the_agent(small_disk: Path, broker: Broker, enrolled: Any, terminal: TestTerminal,
                                fast_retries: None, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Records are held (in order, loudly) while the disk is full and committed once space returns; nothing is
    counted before its COMMIT; the store stays sound. (The agent keeps no photos yet: records have the disk alone.)"""
    from agent.runtime import TerminalRuntime

    started = time.monotonic()
    data = small_disk / "agent"
    store = RecordStore(data / "records.sqlite", terminal.id, terminal.key, data / "chain")
    runtime = TerminalRuntime(terminal.id, store, TrainingSession(terminal.id), None, data)
    store.ensure_genesis(T0)
    append_session(store, T0, 20)
    mounted = small_disk.name == "disk"
    filler = small_disk / "photo-cache.bin"
    if mounted:  # fill the disk as a photo cache would
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
    else:
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count={pages}")
    before = store.counts()
    events: list[Action] = [EmitRecord(RecordKind.EVENT, T0 + timedelta(minutes=30, seconds=i),
                         {"event": "gps_lost", "pad": "x" * 3000}) for i in range(40)]  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="agent.runtime"):
        runtime._execute(events)  # the runtime's own path: append, and hold what the store refuses
    assert runtime.store_failing and runtime.store_errors >= 1
    assert any("ALARM" in r.getMessage() for r in caplog.records)
    held = len(runtime._unstored)
    assert held >= 1 and runtime.records_committed + held == len(events)
    from tools.invariants import integrity_check

    assert integrity_check(store.path) == "ok"
    assert store.counts()["pending"] - before["pending"] == runtime.records_committed  # nothing counted uncommitted
    # space returns
    if mounted:
        filler.unlink()
    else:
        store.db.execute("PRAGMA max_page_count=1073741823")
    runtime._flush()
    assert not runtime.store_failing and not runtime._unstored and runtime.records_committed == len(events)
    server = ServerStack(enrolled, broker.port, broker.pki).start()
    sync = _sync(store, terminal, broker)
    try:
        wait_for("everything acked", lambda: not store.pending(1), 60)
        wait_for("every minute judged", lambda: _judged(enrolled), 30)
    finally:
        sync.stop()
        server.stop()
        store.close()
    finish("agent disk full, then space back", 1, [data / "records.sqlite"], enrolled, started,
           f"{held} records held in memory ({'tmpfs' if mounted else 'max_page_count'})")  # fmt: skip


# ------------------------------------------------------------------------------------------------- exam outage


def test_exam_system_down_for_a_day_then_back(tmp_path: Path, enrolled: Any, terminal: TestTerminal) -> None:
    """The outbox keeps the notice for a simulated day of retries (capped backoff), then delivers it once; a crash
    after the exam side answered (our row still pending) resends it and the exam side answers the same."""
    import httpx

    from server.exam_client import ExamClient
    from server.forwarder import Forwarder
    from server.ingest import Ingestor
    from server.ledger import Ledger
    from server.models import REVIEW_ACCEPTED, REVIEW_PENDING, StageReview
    from server.policy import load_builtin_policy
    from simulators.exam import create_app

    started = time.monotonic()
    now = [datetime(2026, 11, 27, 4, 0, tzinfo=UTC)]
    clock = lambda: now[0]  # noqa: E731
    ledger = Ledger(enrolled, load_builtin_policy("demo"), clock)
    ingestor = Ingestor(enrolled, clock, after_commit=ledger.after_ingest)
    store = _store(tmp_path, terminal)
    fill(store, [(T0, 20)])
    pending = store.pending(100)
    ack, _ = ingestor.handle_batch(f"jiapei/v1/terminals/{terminal.id}/up/records",
                                   terminal.batch([r.raw for r in pending]))  # fmt: skip
    assert ack is not None
    for r in ack.results:
        store.mark(r.chain, r.seq, r.hash, "acked")
    with enrolled() as s:
        assert s.scalar(select(StageReview.notice_id)) is not None  # part 2 complete: a notice is in the outbox

    up = [False]
    from starlette.testclient import TestClient

    client = TestClient(create_app(None))

    def handler(request: httpx.Request) -> httpx.Response:
        if not up[0]:
            raise httpx.ConnectError("exam system down", request=request)
        r = client.request(request.method, request.url.path, content=request.content, headers=request.headers)
        return httpx.Response(r.status_code, content=r.content, headers=r.headers)

    exam = ExamClient("http://exam.test", transport=httpx.MockTransport(handler))
    fw = Forwarder(enrolled, exam, clock)
    attempts = 0
    day_end = now[0] + timedelta(days=1)
    while now[0] < day_end:
        attempts += fw.run_once()
        now[0] += timedelta(seconds=30)
    with enrolled() as s:
        review = s.scalar(select(StageReview))
        assert review is not None and review.status == REVIEW_PENDING and review.last_error
        assert review.attempts == attempts
    assert 250 <= attempts <= 320  # capped exponential backoff: ~one try per 300 s, never a storm, never given up
    up[0] = True
    now[0] += timedelta(seconds=301)
    assert fw.run_once() == 1
    with enrolled() as s:
        review = s.scalar(select(StageReview))
        assert review is not None and review.status == REVIEW_ACCEPTED
        review_id = review.id
    # a crash after the exam side answered, before our commit: the row is pending again; the resend is idempotent
    with enrolled() as s, s.begin():
        row = s.get(StageReview, review_id)
        assert row is not None
        row.status, row.next_attempt_at = REVIEW_PENDING, now[0]
    assert fw.run_once() == 1
    listed = client.get("/api/v1/stage-reviews").json()
    assert len(listed) == 1 and listed[0]["status"] == "accepted"
    with enrolled() as s:
        assert s.scalar(select(StageReview.status)) == REVIEW_ACCEPTED
    store.close()
    finish("exam system down a day, then back", attempts + 2, [store.path], enrolled, started,
           f"{attempts} attempts in the simulated day, 1 notice delivered")  # fmt: skip
