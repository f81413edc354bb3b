"""One test per attack on the terminal ↔ server trust chain (issue 8), each against real parts.

Every test asserts that the attack is refused, where, and that nothing was stored. The broker is the project's TLS
Mosquitto (tests/conftest.py, config from server.broker) with a throwaway CA; the server side is the real
IngestConsumer + Ingestor on a SQLite file; provisioning goes through the real API app.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import T0, Broker, TestPki, TestTerminal, enrol, enrolment_request, start_mosquitto
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from firmware_protocols import topics
from firmware_protocols.messages import Ack, AckStatus, RecordBatch
from server.api import create_app
from server.api_trust import Trust
from server.broker import BrokerControl
from server.ingest import ALARM_BAD_SIGNATURE, ALARM_FOREIGN_PUBLISH, ALARM_FORK, ALARM_REVOKED_TERMINAL, Ingestor
from server.models import Alarm, EnrolmentToken, RawRecord, Terminal, TerminalCertificate
from server.mqtt_consumer import IngestConsumer
from server.policy import load_builtin_policy
from server.settings import Settings

WAIT = 10.0
ADMIN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SCHOOL_ID = "S000000000000001"


# ------------------------------------------------------------------------------------------------ helpers
class Peer:
    """An MQTT client with given certificate files: records whether the broker let it in and what it received."""

    def __init__(self, broker: Broker, tls: dict[str, str] | None, client_id: str = "peer") -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected, self.disconnected, self.subscribed = threading.Event(), threading.Event(), threading.Event()
        self.puback: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if tls is not None:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls.get("cert"), keyfile=tls.get("key"))
        self.answered = threading.Event()  # the broker said yes or no
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: (self.answered.set(), self.disconnected.set())
        self.client.on_connect_fail = lambda *_a: self.answered.set()
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.received.put((m.topic, bytes(m.payload)))
        self.client.on_publish = lambda _c, _u, _mid, rc, _p: self.puback.put(int(rc.value))
        self.error: Exception | None = None
        try:
            self.client.connect(broker.host, broker.port, 30)
            self.client.loop_start()
        except OSError as exc:  # ssl.SSLError included: the handshake was refused
            self.error = exc

    def _on_connect(self, _c: object, _u: object, _f: object, rc: Any, _p: object) -> None:
        if not rc.is_failure:
            self.connected.set()
        self.answered.set()

    def admitted(self) -> bool:
        if self.error is not None:
            return False
        self.answered.wait(WAIT)
        return self.connected.is_set() and not self.disconnected.wait(0.3)

    def publish(self, topic: str, payload: bytes) -> int:
        self.client.publish(topic, payload, qos=1)
        return self.puback.get(timeout=WAIT)  # the broker's PUBACK reason code

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raw_count(sf: Any) -> int:
    with sf() as s:
        return int(s.scalar(select(func.count()).select_from(RawRecord)) or 0)


def alarms(sf: Any, kind: str) -> list[Alarm]:
    with sf() as s:
        return list(s.scalars(select(Alarm).where(Alarm.kind == kind)))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_mosquitto(tmp_path)
    yield b
    b.process.terminate()
    b.process.wait(5)


@pytest.fixture
def consumer(broker: Broker, enrolled: Any) -> Iterator[IngestConsumer]:
    ingestor = Ingestor(enrolled, lambda: datetime.now(UTC))
    c = IngestConsumer(ingestor, enrolled, broker.host, broker.port, resend_check_seconds=3600, tls=broker.context())
    c.start()
    assert c.subscribed.wait(WAIT)
    yield c
    c.stop()


def ack_of(peer: Peer) -> Ack:
    while True:
        topic, payload = peer.received.get(timeout=WAIT)
        if topic.endswith("down/acks"):
            return Ack.decode(payload)


def as_terminal(broker: Broker, terminal_id: str) -> Peer:
    peer = Peer(broker, broker.tls(terminal_id), terminal_id)
    assert peer.admitted()
    peer.client.subscribe(topics.down_acks(terminal_id), qos=1)
    assert peer.subscribed.wait(WAIT)
    return peer


# ------------------------------------------------------------------------------------------------ the broker
def test_no_client_certificate_is_refused(broker: Broker, consumer: IngestConsumer, enrolled: Any) -> None:
    peer = Peer(broker, {"ca": str(broker.pki.ca.cert_file)})
    assert not peer.admitted()
    assert raw_count(enrolled) == 0


def test_plain_mqtt_without_tls_is_refused(broker: Broker, consumer: IngestConsumer, enrolled: Any) -> None:
    peer = Peer(broker, None)
    assert not peer.admitted()
    peer.close()


def test_certificate_from_another_ca_is_refused(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                                tmp_path: Path, terminal: TestTerminal) -> None:  # fmt: skip
    rogue = TestPki(tmp_path / "rogue-ca").tls(terminal.id)  # a CA the broker does not trust, same CN
    peer = Peer(broker, {**rogue, "ca": str(broker.pki.ca.cert_file)})
    assert not peer.admitted()
    assert raw_count(enrolled) == 0


def test_expired_certificate_is_refused(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                        terminal: TestTerminal) -> None:  # fmt: skip
    long_ago = datetime.now(UTC) - timedelta(days=30)
    expired = broker.tls(terminal.id, days=1, now=long_ago, not_before=long_ago - timedelta(days=1))
    peer = Peer(broker, expired)
    assert not peer.admitted()
    assert raw_count(enrolled) == 0


def test_a_terminal_cannot_publish_for_another(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                               terminal: TestTerminal) -> None:  # fmt: skip
    intruder = TestTerminal(id="T000000000000002")
    enrol(enrolled, intruder)
    peer = as_terminal(broker, intruder.id)
    # T2's certificate on T1's topic, with T1-looking (but T2-signed) records: the broker refuses the PUBLISH.
    forged = TestTerminal(id=terminal.id, key=intruder.key)
    assert peer.publish(topics.up_records(terminal.id), forged.batch([forged.genesis()])) == 0x87  # not authorised
    # and it cannot read T1's acks or commands
    peer.client.subscribe(topics.down_acks(terminal.id), qos=1)
    victim = as_terminal(broker, terminal.id)
    assert victim.publish(topics.up_records(terminal.id), terminal.batch([terminal.genesis()])) == 0
    assert ack_of(victim).results[0].status is AckStatus.STORED
    time.sleep(0.5)  # the victim's ack has been delivered; nothing may have reached the intruder
    assert all(not t.startswith(topics.PREFIX + "/" + terminal.id) for t, _ in list(peer.received.queue))
    assert raw_count(enrolled) == 1  # only the victim's own genesis


def test_an_oversized_message_is_refused(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                         terminal: TestTerminal) -> None:  # fmt: skip
    peer = as_terminal(broker, terminal.id)
    peer.client.publish(topics.up_records(terminal.id), b"x" * (2 * 1024 * 1024), qos=1)
    assert peer.disconnected.wait(WAIT)  # max_packet_size: the broker drops the connection
    assert raw_count(enrolled) == 0


# ------------------------------------------------------------------------------------------------ the records
def test_a_replayed_batch_changes_nothing(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                          terminal: TestTerminal) -> None:  # fmt: skip
    peer = as_terminal(broker, terminal.id)
    records = [terminal.genesis(), *terminal.session(T0, 3)]
    batch = terminal.batch(records, "b1")
    peer.publish(topics.up_records(terminal.id), batch)
    assert {r.status for r in ack_of(peer).results} == {AckStatus.STORED}
    peer.publish(topics.up_records(terminal.id), batch)
    assert {r.status for r in ack_of(peer).results} == {AckStatus.DUPLICATE}
    assert raw_count(enrolled) == len(records)


def test_an_edited_record_is_refused_with_an_alarm(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                                   terminal: TestTerminal) -> None:  # fmt: skip
    peer = as_terminal(broker, terminal.id)
    genesis, login, minute = terminal.genesis(), terminal.login(T0), terminal.minute(T0)
    head, payload, sig = minute.split(b".")
    from firmware_protocols.envelope import b64url_decode, b64url_encode

    edited_payload = b64url_decode(payload.decode()).replace(b'"max_speed":250', b'"max_speed":350')
    edited = head + b"." + b64url_encode(edited_payload).encode() + b"." + sig
    peer.publish(topics.up_records(terminal.id), RecordBatch(terminal.id, "b1", (genesis, login, edited)).encode())
    results = ack_of(peer).results
    assert results[2].status is AckStatus.REJECTED and results[2].reason == "bad_signature"
    assert raw_count(enrolled) == 2 and alarms(enrolled, ALARM_BAD_SIGNATURE)


def test_a_record_signed_by_another_terminal_is_refused(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                                        terminal: TestTerminal) -> None:  # fmt: skip
    other = TestTerminal(id="T000000000000002")
    enrol(enrolled, other)
    forged = TestTerminal(id=terminal.id, key=other.key)  # T2's key signs records that claim to be T1's
    peer = as_terminal(broker, terminal.id)  # even with T1's own connection
    peer.publish(topics.up_records(terminal.id), forged.batch([forged.genesis()]))
    result = ack_of(peer).results[0]
    assert result.status is AckStatus.REJECTED and result.reason == "unknown_key"
    assert raw_count(enrolled) == 0 and alarms(enrolled, ALARM_BAD_SIGNATURE)


def test_a_forked_chain_is_refused_with_an_alarm(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                                 terminal: TestTerminal) -> None:  # fmt: skip
    peer = as_terminal(broker, terminal.id)
    genesis, login = terminal.genesis(), terminal.login(T0)
    fork_point = (terminal.seq, terminal.prev)
    honest = terminal.minute(T0)
    terminal.seq, terminal.prev = fork_point
    other_branch = terminal.minute(T0, speed=300)  # same position, other content, validly signed
    peer.publish(topics.up_records(terminal.id), terminal.batch([genesis, login, honest]))
    assert {r.status for r in ack_of(peer).results} == {AckStatus.STORED}
    peer.publish(topics.up_records(terminal.id), terminal.batch([other_branch]))
    result = ack_of(peer).results[0]
    assert result.status is AckStatus.REJECTED and result.reason == "fork"
    assert raw_count(enrolled) == 3 and alarms(enrolled, ALARM_FORK)


def test_a_record_for_another_terminals_topic_is_refused(broker: Broker, consumer: IngestConsumer, enrolled: Any,
                                                         terminal: TestTerminal) -> None:  # fmt: skip
    """T1's own validly signed record, published by T1 inside a batch that claims T2 (or on T2's records)."""
    other = TestTerminal(id="T000000000000002")
    enrol(enrolled, other)
    peer = as_terminal(broker, other.id)
    stolen = terminal.genesis()  # a record of T1 that T2 got hold of
    peer.publish(topics.up_records(other.id), RecordBatch(other.id, "b1", (stolen,)).encode())
    result = ack_of(peer).results[0]
    assert result.status is AckStatus.REJECTED and result.reason == "terminal_mismatch"
    assert raw_count(enrolled) == 0 and alarms(enrolled, ALARM_FOREIGN_PUBLISH)


# ------------------------------------------------------------------------------------------------ provisioning
@pytest.fixture
def api(server_db: Any, tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    trust = Trust(TestPki(tmp_path / "pki").ca, None, "127.0.0.1", 8883)
    app = create_app(Settings(admin_token=ADMIN, database_url="sqlite://"), session_factory=server_db,
                     policy=load_builtin_policy("demo"), trust=trust)  # fmt: skip
    with TestClient(app) as client:
        assert client.post("/api/schools", json={"id": SCHOOL_ID, "name": "s"}, headers=AUTH).status_code == 201
        yield client, server_db


def _token(client: TestClient, terminal: str, **kw: Any) -> str:
    r = client.post("/api/enrolments", json={"terminal": terminal, "car_plate": "鲁L0001学", "school": SCHOOL_ID, **kw},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _terminals(sf: Any) -> int:
    with sf() as s:
        return int(s.scalar(select(func.count()).select_from(Terminal)) or 0)


def test_a_used_token_is_refused_and_a_lost_answer_is_resent(api: tuple[TestClient, Any],
                                                             terminal: TestTerminal) -> None:  # fmt: skip
    client, sf = api
    token = _token(client, terminal.id)
    request, _key = enrolment_request(terminal, token)
    first = client.post("/api/provision", json={"request": request})
    assert first.status_code == 201
    again = client.post("/api/provision", json={"request": request})  # the same terminal, its answer lost
    assert again.status_code == 201 and again.json()["certificate"] == first.json()["certificate"]
    thief = TestTerminal(id=terminal.id)  # someone else with the same token
    stolen, _ = enrolment_request(thief, token)
    r = client.post("/api/provision", json={"request": stolen})
    assert r.status_code == 409 and r.json()["detail"]["reason"] == "token_used"
    with sf() as s:
        assert s.scalar(select(func.count()).select_from(TerminalCertificate)) == 1
        assert s.get(Terminal, terminal.id).key_id == terminal.key_id  # the first terminal's key, not the thief's


def test_an_expired_token_is_refused(api: tuple[TestClient, Any], terminal: TestTerminal) -> None:
    client, sf = api
    token = _token(client, terminal.id, ttl_minutes=1)
    with sf() as s, s.begin():
        for row in s.scalars(select(EnrolmentToken)):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    r = client.post("/api/provision", json={"request": enrolment_request(terminal, token)[0]})
    assert r.status_code == 403 and r.json()["detail"]["reason"] == "token_expired"
    assert _terminals(sf) == 0


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("unknown_token", "unknown_token"),
        ("other_terminal", "terminal_mismatch"),
        ("csr_for_another_cn", "csr_identity_mismatch"),
        ("signed_by_another_key", "unknown_key"),
        ("stale", "stale_request"),
    ],
)
def test_a_bad_enrolment_request_is_refused(api: tuple[TestClient, Any], terminal: TestTerminal, tamper: str,
                                            reason: str) -> None:  # fmt: skip
    client, sf = api
    token = _token(client, terminal.id)
    if tamper == "unknown_token":
        request = enrolment_request(terminal, "guessed-" + token[:8])[0]
    elif tamper == "other_terminal":
        request = enrolment_request(TestTerminal(id="T000000000000009"), token)[0]
    elif tamper == "csr_for_another_cn":
        request = enrolment_request(terminal, token, cn="jiapei-server-1")[0]
    elif tamper == "stale":
        request = enrolment_request(terminal, token, at=datetime.now(UTC) - timedelta(days=2))[0]
    else:  # the payload names one key, the signature is another's
        other = TestTerminal(id=terminal.id)
        honest = enrolment_request(terminal, token)[0].split(".")
        request = ".".join([enrolment_request(other, token)[0].split(".")[0], honest[1], honest[2]])
    r = client.post("/api/provision", json={"request": request})
    assert r.status_code in (403, 409, 422) and r.json()["detail"]["reason"] in (reason, "bad_enrolment"), r.text
    assert _terminals(sf) == 0


def test_refused_enrolments_and_admin_logins_are_rate_limited(api: tuple[TestClient, Any]) -> None:
    client, _sf = api
    codes = [client.post("/api/provision", json={"request": "x.y.z"}).status_code for _ in range(12)]
    assert codes[:10] == [422] * 10 and codes[10:] == [429, 429]
    wrong = {"Authorization": "Bearer guess"}
    codes = [client.post("/api/schools", json={"id": "S000000000000009", "name": "x"}, headers=wrong).status_code
             for _ in range(12)]  # fmt: skip
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]


def test_pages_and_api_carry_security_headers(api: tuple[TestClient, Any]) -> None:
    client, _sf = api
    r = client.get("/api/terminals")
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------------------------------------ revocation
def test_revocation_closes_the_connection_refuses_reconnects_and_later_records(
    broker: Broker, consumer: IngestConsumer, enrolled: Any, terminal: TestTerminal
) -> None:
    trust = Trust(broker.pki.ca, BrokerControl(broker.pki.ca, broker.pki.dir, pid_file=broker.pid_file,
                                               mqtt_host=broker.host, mqtt_port=broker.port), "127.0.0.1", broker.port)
    app = create_app(Settings(admin_token=ADMIN, database_url="sqlite://"), session_factory=enrolled,
                     policy=load_builtin_policy("demo"), trust=trust)  # fmt: skip
    files = broker.tls(terminal.id)
    with enrolled() as s, s.begin():  # the certificate the terminal was issued, as provisioning stores it
        s.add(TerminalCertificate(serial=format(broker.pki.last_serial, "x"), terminal_id=terminal.id, pem="",
                                  issued_at=datetime.now(UTC), not_after=datetime.now(UTC) + timedelta(days=1),
                                  revoked_at=None))  # fmt: skip
    car = Peer(broker, files, terminal.id)
    assert car.admitted()
    car.client.subscribe(topics.down_acks(terminal.id), qos=1)
    car.publish(topics.up_records(terminal.id), terminal.batch([terminal.genesis(), terminal.login(T0)]))
    assert {r.status for r in ack_of(car).results} == {AckStatus.STORED}

    with TestClient(app) as client:
        r = client.post(f"/api/terminals/{terminal.id}/revoke", json={"reason": "stolen car"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["broker_reloaded"] and r.json()["connection_closed"]
        assert car.disconnected.wait(WAIT)  # the live connection is closed
        car.client.loop_stop()
        again = Peer(broker, files, terminal.id + "-again")
        assert not again.admitted()  # the CRL refuses the certificate
        # Records that still reach the server (a worker's backlog, another path) are refused from now on …
        ingestor = Ingestor(enrolled, lambda: datetime.now(UTC))
        ack, _ = ingestor.handle_batch(topics.up_records(terminal.id), terminal.batch([terminal.minute(T0)]))
        assert ack is not None and ack.results[0].reason == "terminal_revoked"
        assert alarms(enrolled, ALARM_REVOKED_TERMINAL)
        # … while those stored before stay verifiable.
        audit = client.get(f"/api/terminals/{terminal.id}/audit", headers=AUTH).json()
        assert audit["status"] == "revoked" and audit["records"] == audit["verified"] == 2
    assert raw_count(enrolled) == 2
