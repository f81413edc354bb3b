"""Every bad input of issue 12 against a real gateway and database: refused with a reason (log + counter), the
connection closed where the protocol says so, and nothing stored."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import COACH, COURSE_C1_PART2, SCHOOL, STUDENT
from gateway_helpers import (
    NATIONAL,
    PHONE,
    RunningGateway,
    certificate_pem,
    register,
    rsa_key,
    start_gateway,
    training_start,
)
from sqlalchemy import func, select

from firmware_protocols.jt808 import (
    Header,
    Heartbeat,
    MinuteRecord,
    StudentLogin,
    TrainingEnvelope,
    TrainingUplink,
    Unknown,
    Version,
    encode_packet,
)
from firmware_protocols.jt808.signing import sign_envelope
from server.api_national import NationalRefused, register_national
from server.models import Alarm, Minute, NationalEnvelope, RawRecord, Rejection
from simulators.national_terminal import LinkDown, NationalTerminal

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.fixture
def gw(enrolled: Any) -> Iterator[RunningGateway]:
    register(enrolled)
    running = start_gateway(enrolled, auth_timeout_s=1.0, flood_rate=20.0, flood_burst=100, max_bad_frames=5)
    yield running
    running.stop()


def _stored(sf: Any) -> int:
    with sf() as s:
        return int(s.scalar(select(func.count()).select_from(RawRecord)) or 0)


def _closed_by_gateway(sim: NationalTerminal, timeout: float = 5.0) -> bool:
    """True when the gateway closes the connection (EOF) within ``timeout``."""
    assert sim.sock is not None
    sim.sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sim.sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _refused(caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    return any(f"refused {reason} " in r.getMessage() for r in caplog.records)


def _minute(sim: NationalTerminal) -> MinuteRecord:
    start = training_start()
    return MinuteRecord(sim.record_no(start), 1, STUDENT, COACH, 1, start.astimezone(_bj()).time().replace(tzinfo=None),
                        COURSE_C1_PART2, 1, 36.0, 0.5, sim.gnss(start))  # fmt: skip


def _bj() -> Any:
    from firmware_protocols.identifiers import BEIJING

    return BEIJING


def _frame(sim: NationalTerminal, env: TrainingEnvelope) -> bytes:
    return encode_packet(Header(0x0900, PHONE, sim.next_serial(), Version.TRAINING), TrainingUplink.of(env))


# ---------------------------------------------------------------------------------------------- framing
def test_half_frame_then_close(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sim = gw.terminal()
    sim.start()
    frame = _frame(sim, sim.envelope(_minute(sim)))
    before = _stored(enrolled)
    sim.send_raw(frame[: len(frame) // 2])
    assert sim.sock is not None
    sim.sock.shutdown(socket.SHUT_WR)  # the link ends half way through the frame
    assert _closed_by_gateway(sim)
    assert gw.wait_for("truncated")
    assert _refused(caplog, "truncated")
    assert _stored(enrolled) == before


def test_half_frame_then_silence_is_cut_at_the_deadline(gw: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal()
    sim.connect()
    frame = encode_packet(Header(0x0002, PHONE, 1, Version.TRAINING), Heartbeat())
    sim.send_raw(frame[:7])
    assert _closed_by_gateway(sim)
    assert gw.gateway.counters["auth_timeout"] == 1
    assert any("auth_timeout" in r.getMessage() and "half frame" in r.getMessage() for r in caplog.records)


def test_bad_xor(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal()
    sim.start()
    frame = bytearray(_frame(sim, sim.envelope(_minute(sim))))
    frame[-2] ^= 0x01 if frame[-2] not in (0x7C, 0x7F, 0x7D, 0x7E) else 0x10  # the checksum byte
    before = _stored(enrolled)
    sim.send_raw(bytes(frame))
    assert gw.wait_for("bad_checksum")
    assert _refused(caplog, "bad_checksum")
    assert sim.heartbeat() == 0  # one bad frame on a noisy line does not cost the connection
    assert _stored(enrolled) == before


def test_oversized_frame(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal()
    sim.start()
    sim.send_raw(b"\x7e" + b"\x01" * 5000)
    assert _closed_by_gateway(sim)
    assert gw.gateway.counters["frame_too_large"] == 1
    assert _refused(caplog, "frame_too_large")
    assert _stored(enrolled) == 0


def test_flood(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal()
    sim.start()
    beat = encode_packet(Header(0x0002, PHONE, 7, Version.TRAINING), Heartbeat())
    with pytest.raises(OSError):
        for _ in range(50):
            sim.send_raw(beat * 200)  # 10,000 heartbeats at once
            time.sleep(0.01)
    assert gw.wait_for("flood")
    assert _refused(caplog, "flood")
    assert _stored(enrolled) == 0


def test_junk_until_the_limit(gw: RunningGateway) -> None:
    sim = gw.terminal()
    sim.start()
    for _ in range(8):
        sim.send_raw(b"AT+GPS?\r\n\x7e\x7e")
    assert _closed_by_gateway(sim)
    c = gw.gateway.counters
    assert c["junk"] + c["frame_too_short"] >= 5 and c["too_many_bad_frames"] == 1


# ---------------------------------------------------------------------------------------------- states
def test_never_authenticating(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal()
    sim.connect()
    assert sim.heartbeat() == 1  # failed: not authenticated
    assert gw.gateway.counters["not_authenticated"] == 1
    assert _closed_by_gateway(sim)
    assert gw.gateway.counters["auth_timeout"] == 1
    assert _refused(caplog, "auth_timeout")


def test_training_before_authentication_is_refused(gw: RunningGateway, enrolled: Any) -> None:
    sim = gw.terminal()
    sim.connect()
    assert sim.send_envelope(sim.envelope(_minute(sim))) == 1
    assert gw.gateway.counters["not_authenticated"] == 1
    assert _stored(enrolled) == 0


def test_unknown_message_id_is_not_supported(gw: RunningGateway) -> None:
    sim = gw.terminal()
    sim.start()
    answer = sim.request(Unknown(0x0F01, b"\x01\x02"))
    assert answer.result == 3  # type: ignore[attr-defined]
    assert gw.wait_for("not_supported")
    assert sim.heartbeat() == 0


# ---------------------------------------------------------------------------------------------- identity
def test_unregistered_terminal_is_refused(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal(terminal="N000000000000099", phone="0013900000000099")
    sim.connect()
    assert sim.register() == 4  # no such terminal
    assert _closed_by_gateway(sim)
    assert _refused(caplog, "unknown_terminal")
    sim.connect()
    with pytest.raises((LinkDown, AssertionError)):
        assert sim.authenticate() == 0
    assert _stored(enrolled) == 0


def test_plate_mismatch(gw: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal(plate="鲁L99999学")
    sim.connect()
    assert sim.register() == 2  # no such vehicle
    assert _closed_by_gateway(sim)
    assert _refused(caplog, "plate_mismatch")


def test_terminal_number_not_matching_its_certificate(gw: RunningGateway, enrolled: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    sim = gw.terminal(key=rsa_key(1))  # claims the registered number, holds another key
    sim.connect()
    assert sim.register() == 0  # the number and plate are registered...
    assert sim.authenticate() == 1  # ...but its authentication is not signed by that number's certificate
    assert _closed_by_gateway(sim)
    assert gw.gateway.counters["terminal_certificate_mismatch"] == 1
    assert _refused(caplog, "terminal_certificate_mismatch")
    with enrolled() as s:
        assert s.scalar(select(Alarm).where(Alarm.kind == "terminal_certificate_mismatch")) is not None
    assert _stored(enrolled) == 0


def test_registration_refuses_a_certificate_of_another_terminal(enrolled: Any) -> None:
    with pytest.raises(NationalRefused) as refused, enrolled() as s, s.begin():
        register_national(s, terminal=NATIONAL, phone=PHONE, car_plate="x", school=SCHOOL,
                          pem=certificate_pem(rsa_key(0), "N000000000000777"), now=datetime.now(UTC))  # fmt: skip
    assert refused.value.reason == "certificate_terminal_mismatch"
    with enrolled() as s:
        assert s.scalar(select(func.count()).select_from(NationalEnvelope)) == 0


def test_envelope_naming_another_terminal(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal()
    sim.start()
    env = sign_envelope(TrainingEnvelope.of(_minute(sim), "N000000000000002", 1), rsa_key(0))
    assert sim.send_envelope(env) == 1
    assert _closed_by_gateway(sim)
    assert _refused(caplog, "terminal_mismatch")
    assert _stored(enrolled) == 0


def test_stale_and_replayed_authentication(gw: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal()
    sim.connect()
    assert sim.authenticate(timestamp=int(time.time()) - 3600) == 1
    assert _refused(caplog, "stale_authentication")
    sim.connect()
    stamp = int(time.time())
    assert sim.authenticate(timestamp=stamp) == 0
    sim.drop()
    sim.connect()
    assert sim.authenticate(timestamp=stamp) == 1  # a captured 0x0102 played again
    assert _refused(caplog, "replayed_authentication")


# ---------------------------------------------------------------------------------------------- envelopes
def test_edited_envelope(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    sim = gw.terminal()
    sim.start()
    env = sim.envelope(_minute(sim))
    data = bytearray(env.data)
    data[-40] ^= 0x01  # one bit of the distance or the fix, after signing
    assert sim.send_envelope(dataclasses.replace(env, data=bytes(data))) == 1
    assert _closed_by_gateway(sim)
    assert gw.gateway.counters["bad_signature"] == 1
    assert _refused(caplog, "bad_signature")
    with enrolled() as s:
        assert s.scalar(select(Alarm).where(Alarm.kind == "bad_signature")) is not None
        assert s.get(Rejection, "bad_signature").count == 1
        assert s.scalar(select(func.count()).select_from(Minute)) == 0
    assert _stored(enrolled) == 0


def test_replayed_envelope_after_reconnect(gw: RunningGateway, enrolled: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sim = gw.terminal()
    sim.start()
    env = sim.envelope(StudentLogin(STUDENT, COACH, COURSE_C1_PART2, 1, sim.gnss(training_start())))
    assert sim.send_envelope(env) == 0
    stored = _stored(enrolled)
    sim.drop()
    sim.reconnect()
    assert sim.send_envelope(env) == 0  # answered as stored (it is) ...
    assert _stored(enrolled) == stored  # ... and stored once
    assert gw.gateway.counters["replayed_envelope"] == 1
    assert any("replayed_envelope" in r.getMessage() for r in caplog.records)


def test_same_record_number_other_content(gw: RunningGateway, enrolled: Any) -> None:
    sim = gw.terminal()
    sim.start()
    record = _minute(sim)
    assert sim.send_envelope(sim.envelope(record)) == 0
    forged = dataclasses.replace(record, distance_km=9.9)  # the terminal's key signs it, but the number is taken
    assert sim.send_envelope(sim.envelope(forged)) == 1
    with enrolled() as s:
        assert s.get(Rejection, "duplicate_record_no").count == 1
        assert s.scalar(select(func.count()).select_from(Minute)) == 1


def test_standard_jt808_header_is_refused(gw: RunningGateway) -> None:
    sim = gw.terminal()
    sim.connect()
    location = sim.gnss(training_start())
    sim.send_raw(encode_packet(Header(0x0200, "013912345678", 1, Version.V2013), location))
    assert gw.wait_for("bad_version_byte")  # a plain tracker's frame: this gateway speaks the training protocol
