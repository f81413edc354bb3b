"""Scale-out: two ingest workers on one MQTT 5 shared subscription, one broker, one database (PostgreSQL and SQLite).

Several terminals publish their batches out of order and some twice; the broker hands each message to one of the
two workers (``$share/ingest``, round robin), so a terminal's records reach both workers in any order. How
per-terminal order is kept: it is not needed at delivery. Ingest is order-independent — a record is stored once
its own signature verifies, each hash link is checked when both ends are stored, and a hole is only chased with
``resend`` after the grace period — and two workers holding batches of one terminal take turns on that chain's row
(``SELECT … FOR UPDATE`` on PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), so each sees the other's
committed records. The test shows: every record stored exactly once, every chain contiguous with every ``prev``
equal to the hash of the record before it, no alarm, both workers used.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import T0, Broker, TestTerminal, enrol, pki_at, start_mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from firmware_protocols import topics
from firmware_protocols.messages import Ack, AckStatus
from firmware_protocols.records import GENESIS_PREV, record_hash
from server import db
from server.broker import ACL_FILE, add_worker, render_acl, workers_in
from server.ingest import Ingestor
from server.models import Alarm, Chain, Minute, RawRecord
from server.mqtt_consumer import IngestConsumer
from server.pki import write_public

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WAIT = 30.0
TERMINALS = 4
SESSIONS_PER_TERMINAL = 3
MINUTES_PER_SESSION = 12
BATCH = 5


class Car:
    """One terminal's MQTT side: publishes its batches, counts the records its acks confirm."""

    def __init__(self, broker: Broker, terminal: TestTerminal) -> None:
        self.terminal = terminal
        self.acked: dict[int, str] = {}  # seq → status of its latest ack
        self.acks: queue.Queue[Ack] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=terminal.id, protocol=mqtt.MQTTv5)
        files = broker.tls(terminal.id)
        self.client.tls_set(ca_certs=files["ca"], certfile=files["cert"], keyfile=files["key"])
        self.client.on_message = lambda _c, _u, m: self.acks.put(Ack.decode(bytes(m.payload)))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topics.down_acks(terminal.id), qos=1)
        self.client.loop_start()
        assert subscribed.wait(WAIT)

    def publish(self, payload: bytes) -> None:
        self.client.publish(topics.up_records(self.terminal.id), payload, qos=1).wait_for_publish(WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """The broker, with a second worker identity in its ACL (what ``jiapei pki worker --name jiapei-server-2`` does)."""
    pki = pki_at(tmp_path)
    add_worker(pki.ca, "jiapei-server-2")
    write_public(pki.dir / ACL_FILE, render_acl([], workers_in(pki.dir)).encode())
    b = start_mosquitto(tmp_path)
    yield b
    b.process.terminate()
    b.process.wait(5)


@pytest.fixture
def workers(db_url: str, broker: Broker) -> Iterator[tuple[Any, list[IngestConsumer]]]:
    mosquitto = broker
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    sf = db.make_session_factory(engine)

    def clock() -> datetime:
        return datetime.now(UTC)

    made = []
    for cn in ("jiapei-server-1", "jiapei-server-2"):  # distinct CNs: the broker forces client id = CN
        ingestor = Ingestor(sf, clock, resend_grace=timedelta(seconds=30))
        made.append(IngestConsumer(ingestor, sf, mosquitto.host, mosquitto.port, client_id=cn, clock=clock,
                                   resend_check_seconds=3600, tls=mosquitto.context(cn)))  # fmt: skip
    for w in made:
        w.start()
    for w in made:
        assert w.subscribed.wait(WAIT), "a worker did not subscribe"
    yield sf, made
    for w in made:
        w.stop()
    engine.dispose()


def test_two_workers_store_every_record_once_and_keep_every_chain(broker: Broker, workers: Any) -> None:
    sf, consumers = workers
    rng = random.Random(10)
    terminals = [TestTerminal(id=f"T{100000000000010 + i:015d}") for i in range(TERMINALS)]
    records: dict[str, list[bytes]] = {}
    batches: list[tuple[int, bytes]] = []
    for i, t in enumerate(terminals):
        enrol(sf, t)
        raws = [t.genesis()]
        for k in range(SESSIONS_PER_TERMINAL):
            raws += t.session(T0 + timedelta(hours=k), MINUTES_PER_SESSION, session=f"S{k}")
        records[t.id] = raws
        batches += [(i, t.batch(raws[j : j + BATCH])) for j in range(0, len(raws), BATCH)]
    batches += rng.sample(batches, len(batches) // 4)  # some batches twice: answered "duplicate"
    rng.shuffle(batches)  # every terminal's batches out of order, interleaved with the others'

    cars = [Car(broker, t) for t in terminals]
    try:
        for i, payload in batches:
            cars[i].publish(payload)
        expected = {t.id: len(records[t.id]) for t in terminals}
        for car in cars:
            sent = sum(1 for i, _ in batches if terminals[i].id == car.terminal.id)
            for _ in range(sent):  # one ack per message, stored or duplicate, never rejected
                ack = car.acks.get(timeout=WAIT)
                for r in ack.results:
                    assert r.status in (AckStatus.STORED, AckStatus.DUPLICATE), r
                    car.acked[r.seq] = r.status.value
            assert sorted(car.acked) == list(range(expected[car.terminal.id]))
    finally:
        for car in cars:
            car.close()

    assert all(c.stats["messages"] > 0 for c in consumers), [c.stats for c in consumers]  # both workers took work
    assert sum(c.stats["messages"] for c in consumers) == len(batches)
    assert all(c.stats["errors"] == 0 for c in consumers)
    with sf() as s:
        assert s.scalar(select(func.count()).select_from(RawRecord)) == sum(expected.values())  # each stored once
        assert s.scalar(select(func.count()).select_from(Alarm)) == 0
        for t in terminals:
            rows = s.execute(
                select(RawRecord.seq, RawRecord.hash, RawRecord.prev, RawRecord.raw)
                .where(RawRecord.terminal_id == t.id, RawRecord.chain == 1)
                .order_by(RawRecord.seq)
            ).all()
            assert [r.seq for r in rows] == list(range(expected[t.id]))
            assert [bytes(r.raw) for r in rows] == records[t.id]  # the exact bytes, once each
            prev = GENESIS_PREV
            for r in rows:  # the chain is intact: every prev is the hash of the record before it
                assert r.prev == prev and r.hash == record_hash(bytes(r.raw))
                prev = r.hash
            chain = s.get(Chain, (t.id, 1))
            assert chain is not None
            assert (chain.contiguous_seq, chain.max_seq, chain.gap_since) == (expected[t.id] - 1,) * 2 + (None,)
            minutes = s.scalar(select(func.count()).select_from(Minute).where(Minute.terminal_id == t.id))
            assert minutes == SESSIONS_PER_TERMINAL * MINUTES_PER_SESSION  # each minute once (record_no unique)
