"""The ingest consumer against a real Mosquitto: signed batch in, ack out after commit; resends; roster; restarts."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import T0, Broker, TestPki, TestTerminal, enrol, free_port_number, pki_at, start_mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from firmware_protocols import topics
from firmware_protocols.messages import Ack, AckStatus, Command, EnrolmentRequest, Roster
from server import mqtt_consumer
from server.ingest import Ingestor
from server.ledger import Ledger
from server.models import RawRecord
from server.mqtt_consumer import IngestConsumer
from server.pki import key_pem, make_csr, new_tls_key, write_private
from server.policy import load_builtin_policy

WAIT = 10.0


class TerminalClient:
    """The terminal's side of MQTT: publishes batches, collects what arrives on its down topics."""

    def __init__(self, broker: Broker, terminal_id: str, tls: dict[str, str] | None = None) -> None:
        self.received: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"term-{terminal_id}", protocol=mqtt.MQTTv5)
        tls = tls or broker.tls(terminal_id)  # a certificate with CN = the terminal id, from the test's CA
        self.client.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
        self.client.on_message = lambda _c, _u, m: self.received.put((m.topic, bytes(m.payload), bool(m.retain)))
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{topics.PREFIX}/{terminal_id}/down/#", qos=1)
        self.client.loop_start()
        assert self.subscribed.wait(WAIT)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT)

    def next_on(self, suffix: str) -> tuple[bytes, bool]:
        while True:
            topic, payload, retain = self.received.get(timeout=WAIT)
            if topic.endswith(suffix):
                return payload, retain

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def consumer_for(enrolled: Any) -> Iterator[Any]:
    made: list[IngestConsumer] = []

    def make(broker_host: str, port: int, pki: TestPki, clock: Any = None, grace: float = 30.0) -> IngestConsumer:
        clock = clock or (lambda: datetime.now(UTC))
        ledger = Ledger(enrolled, load_builtin_policy("demo"), clock)
        ingestor = Ingestor(enrolled, clock, resend_grace=timedelta(seconds=grace), after_commit=ledger.after_ingest)
        c = IngestConsumer(
            ingestor, enrolled, broker_host, port, clock=clock, resend_check_seconds=3600, tls=pki.context()
        )
        c.start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def test_signed_batch_is_acked_after_commit(
    mosquitto: Broker, enrolled: Any, consumer_for: Any, terminal: TestTerminal
) -> None:
    consumer = consumer_for(mosquitto.host, mosquitto.port, mosquitto.pki)
    assert consumer.subscribed.wait(WAIT)
    car = TerminalClient(mosquitto, terminal.id)
    try:
        records = [terminal.genesis(), *terminal.session(T0, 3)]
        car.publish(topics.up_records(terminal.id), b"\x00garbage")  # a broken message first
        error_ack, _ = car.next_on("down/acks")
        assert Ack.decode(error_ack).error == "bad_json"
        car.publish(topics.up_records(terminal.id), terminal.batch(records, "batch-42"))
        ack = Ack.decode(car.next_on("down/acks")[0])
        assert ack.batch == "batch-42" and [r.status for r in ack.results] == [AckStatus.STORED] * len(records)
        with enrolled() as s:  # the ack exists, so the records are committed
            assert s.scalar(select(func.count()).select_from(RawRecord)) == len(records)
        car.publish(topics.up_records(terminal.id), terminal.batch(records, "batch-42"))
        again = Ack.decode(car.next_on("down/acks")[0])
        assert [r.status for r in again.results] == [AckStatus.DUPLICATE] * len(records)
        assert consumer.stats["acks"] == 3 and consumer.stats["errors"] == 0

        assert consumer.publish_roster(terminal.id)
        payload, _retain = car.next_on("down/roster")
        roster = Roster.decode(payload)
        assert roster.terminal == terminal.id and [p.id for p in roster.students] == ["P000000000000001"]
    finally:
        car.close()
    # retained: a terminal connecting later still gets it
    late = TerminalClient(mosquitto, terminal.id)
    try:
        payload, retain = late.next_on("down/roster")
        assert retain and Roster.decode(payload).terminal == terminal.id
    finally:
        late.close()


def test_gap_sends_resend_command(mosquitto: Broker, enrolled: Any, consumer_for: Any, terminal: TestTerminal) -> None:
    now = [T0]
    consumer = consumer_for(mosquitto.host, mosquitto.port, mosquitto.pki, clock=lambda: now[0], grace=30)
    assert consumer.subscribed.wait(WAIT)
    car = TerminalClient(mosquitto, terminal.id)
    try:
        records = [terminal.genesis(), *terminal.session(T0, 4)]
        car.publish(topics.up_records(terminal.id), terminal.batch(records[:2] + records[4:]))
        car.next_on("down/acks")
        assert consumer.send_due_resends() == 0
        now[0] += timedelta(seconds=31)
        assert consumer.send_due_resends() == 1
        cmd = Command.decode(car.next_on("down/commands")[0])
        assert cmd == Command.resend(1, 2, 3)
    finally:
        car.close()


def test_consumer_waits_for_a_late_broker(
    tmp_path: Any,
    enrolled: Any,
    consumer_for: Any,
    terminal: TestTerminal,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(mqtt_consumer, "RECONNECT_MIN_SECONDS", 0.05)
    monkeypatch.setattr(mqtt_consumer, "RECONNECT_MAX_SECONDS", 0.2)
    port = free_port_number()
    consumer = consumer_for("127.0.0.1", port, pki_at(tmp_path))
    assert not consumer.connected.wait(0.3)
    broker = start_mosquitto(tmp_path, port)
    try:
        assert consumer.subscribed.wait(WAIT)
        assert any("not reachable" in r.getMessage() for r in caplog.records)
        car = TerminalClient(broker, terminal.id)
        car.publish(topics.up_records(terminal.id), terminal.batch([terminal.genesis()]))
        assert Ack.decode(car.next_on("down/acks")[0]).results[0].status is AckStatus.STORED
        car.close()
    finally:
        broker.process.terminate()
        broker.process.wait(5)


def test_unregistered_second_terminal_cannot_ack_itself(mosquitto: Broker, enrolled: Any, consumer_for: Any) -> None:
    consumer = consumer_for(mosquitto.host, mosquitto.port, mosquitto.pki)
    assert consumer.subscribed.wait(WAIT)
    stranger = TestTerminal(id="T999999999999999")
    car = TerminalClient(mosquitto, stranger.id)
    try:
        car.publish(topics.up_records(stranger.id), stranger.batch([stranger.genesis()]))
        ack = Ack.decode(car.next_on("down/acks")[0])
        assert ack.results[0].status is AckStatus.REJECTED and ack.results[0].reason == "unknown_terminal"
        registered = TestTerminal(id="T000000000000002")
        enrol(enrolled, registered)
    finally:
        car.close()


def test_run_server_wires_everything_and_stops(mosquitto: Broker, tmp_path: Any, terminal: TestTerminal) -> None:
    import httpx

    from server.app import run_server
    from server.settings import Settings

    api_port = free_port_number()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'srv.db'}",
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        policy="demo",
        admin_token="t",
        api_port=api_port,
        exam_url="http://127.0.0.1:9",
        pki_dir=str(mosquitto.pki.dir),
        broker_pid_file=str(mosquitto.pid_file),
    )
    stop = threading.Event()
    runner = threading.Thread(target=run_server, args=(settings,), kwargs={"stop": stop}, daemon=True)
    runner.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=WAIT)
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{api_port}/api/health", timeout=1)
                break
            except httpx.TransportError:
                assert datetime.now(UTC) < deadline, "API did not come up"
                stop.wait(0.05)
        assert r.json()["status"] == "ok"
        auth = {"Authorization": "Bearer t"}
        base = f"http://127.0.0.1:{api_port}/api"
        assert httpx.post(f"{base}/schools", json={"id": "S000000000000001", "name": "s"}, headers=auth).is_success
        body = {"terminal": terminal.id, "car_plate": "x", "school": "S000000000000001"}
        token = httpx.post(f"{base}/enrolments", json=body, headers=auth).json()["token"]
        tls_key = new_tls_key()
        request = EnrolmentRequest(terminal.id, token, terminal.public_pem, make_csr(tls_key, terminal.id).decode(),
                                   datetime.now(UTC).replace(microsecond=0)).sign(terminal.key)  # fmt: skip
        r = httpx.post(f"{base}/provision", json={"request": request.decode()})
        assert r.status_code == 201, r.text
        answer = r.json()
        files = {"ca": tmp_path / "ca.crt", "cert": tmp_path / "client.crt", "key": tmp_path / "client.key"}
        files["ca"].write_text(answer["ca_certificate"])
        files["cert"].write_text(answer["certificate"])
        write_private(files["key"], key_pem(tls_key))
        car = TerminalClient(mosquitto, terminal.id, {k: str(v) for k, v in files.items()})  # the issued certificate
        consumer_roster = car.next_on("down/roster")  # the roster went out (retained) when the terminal registered
        payload, retain = consumer_roster
        assert Roster.decode(payload).coaches == ()
        car.publish(topics.up_records(terminal.id), terminal.batch([terminal.genesis()]))
        assert Ack.decode(car.next_on("down/acks")[0]).results[0].status is AckStatus.STORED
        car.close()
    finally:
        stop.set()
        runner.join(15)
    assert not runner.is_alive()
