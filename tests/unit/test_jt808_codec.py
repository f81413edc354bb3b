"""JT/T 808 codec: round trips of every message built, the training envelope signed and verified, framing
refusals, sub-package reassembly with the caller's clock, and hypothesis: no input raises anything but ours."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_protocols.errors import BadSignature, ProtocolError
from firmware_protocols.jt808 import (
    Authenticate,
    CoachLogin,
    CoachLogout,
    Deframer,
    Dialect,
    DownlinkPassthrough,
    Frame,
    FrameRefused,
    Header,
    Heartbeat,
    Jt808Decoder,
    Location,
    LocationBatch,
    Message,
    MinuteRecord,
    PackageHeld,
    Packet,
    PhotoData,
    PhotoInit,
    PhotoNowReply,
    PhotoQueryReply,
    PhotoQueryResult,
    PhotoUploadReply,
    PlatformResponse,
    Refused,
    Register,
    RegisterResponse,
    ReuploadReply,
    ReuploadRequest,
    StudentLogin,
    StudentLogout,
    TerminalParameters,
    TerminalParametersReply,
    TerminalResponse,
    TrainingAuthenticate,
    TrainingBan,
    TrainingDownlink,
    TrainingEnvelope,
    TrainingMessage,
    TrainingRegisterResponse,
    TrainingUnknown,
    TrainingUplink,
    Unknown,
    UplinkPassthrough,
    Version,
    build_frame,
    decode_payload,
    decode_training,
    encode_packet,
    encode_packets,
)
from firmware_protocols.jt808.errors import UnknownMessageId
from firmware_protocols.jt808.framing import MAX_FRAME_SIZE, xor_checksum
from firmware_protocols.jt808.reassembly import Reassembler
from firmware_protocols.jt808.signing import sign_envelope, verify_envelope

TERMINAL16 = "T000000000000001"
T = datetime(2026, 11, 27, 2, 0, 30, tzinfo=UTC)  # 10:00:30 Beijing

LOC = Location(0, 0x000C0003, 35.416, 119.527, 25.3, 90, T, 42, None, ((0x01, (1234).to_bytes(4, "big")),))
MILEAGE_RPM = ((0x01, (987).to_bytes(4, "big")), (0x05, (1800).to_bytes(2, "big")))
GNSS = Location(0, 0xB, 35.416, -119.527, 24.0, 270, T, None, 25.5, MILEAGE_RPM)
MINUTE = MinuteRecord(
    f"{TERMINAL16}2611270001", 1, "P000000000000001", "C000000000000001", 7, time(10, 0, 0), "1212130000", 1,
    42.5, 0.3, GNSS,
)  # fmt: skip

STANDARD_MESSAGES: list[Message] = [
    TerminalResponse(5, 0x8100, 0),
    PlatformResponse(7, 0x0200, 3),
    Heartbeat(),
    Register(44, 303, "70111", "BSJ-A6-BD", "0567872", 1, "粤B88888"),
    Register(44, 303, "70111", "BSJ-M7B", "0000000", 1, "粤B88888", layout="2011"),
    RegisterResponse(12, 0, "auth-code-1"),
    Authenticate("ODY4OTM1MDYwMDA1MDIw"),
    LOC,
    LocationBatch(1, (LOC, dataclasses.replace(LOC, time=None, extras=()))),
    UplinkPassthrough(0x41, b"$OBD-RT,12.3"),
    DownlinkPassthrough(0xF0, b"TEST"),
    Unknown(0x6006, b"\x01\x02"),
]

TRAINING_INNER: list[TrainingMessage] = [
    CoachLogin("C000000000000001", "370102199001011234", "C1", GNSS),
    CoachLogout("C000000000000001", GNSS),
    StudentLogin("P000000000000001", "C000000000000001", "1212130000", 7, GNSS),
    StudentLogout("P000000000000001", T, 60, 12.3, 7, GNSS),
    MINUTE,
    ReuploadRequest(1, T, T.replace(hour=3), 0),
    ReuploadReply(4),
    PhotoNowReply(1, 1, 1, 2),
    PhotoQueryReply(1),
    PhotoQueryResult(True, 2, ("0000000001", "0000000002")),
    PhotoUploadReply(0),
    PhotoInit("0000000001", "P000000000000001", 129, 1, 2, 19, 3, 2500, 7, GNSS, 87),
    PhotoData("0000000001", b"\xff\xd8" + bytes(600) + b"\xff\xd9"),
    TerminalParameters(reverify_interval_min=20),
    TerminalParametersReply(0, 0),
    TrainingBan(2, "禁训: 未缴费"),
    TrainingUnknown(0x0401, b"\x00\x01"),
]


def header(msg_id: int, version: Version, serial: int = 1) -> Header:
    terminal = {
        Version.V2013: "013511221122",
        Version.V2019: "00000866496077582164",
        Version.TRAINING: "1234567890123456",
    }
    return Header(msg_id, terminal[version], serial, version)


def decode_all(*chunks: bytes, dialect: Dialect = Dialect.AUTO, now: float = 0.0) -> list[object]:
    d = Jt808Decoder(dialect)
    for c in chunks:
        d.receive_data(c, now)
    d.receive_data(b"", now)
    return list(d.events())


# --- round trips -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [Version.V2013, Version.V2019])
@pytest.mark.parametrize("message", STANDARD_MESSAGES, ids=lambda m: f"0x{m.msg_id:04x}-{type(m).__name__}")
def test_standard_messages_round_trip(message: Message, version: Version) -> None:
    if isinstance(message, Register) and version is Version.V2019:
        message = dataclasses.replace(message, layout="2019")
    if isinstance(message, Authenticate) and version is Version.V2019:
        message = dataclasses.replace(message, imei="866496077582164", software_version="1.0.2")
    h = header(message.msg_id, version)
    wire = encode_packet(h, message)
    (event,) = decode_all(wire)
    assert isinstance(event, Packet)
    assert event.message == message
    assert event.header == dataclasses.replace(h, body_length=len(message.encode(version)))
    assert encode_packet(event.header, event.message) == wire


@pytest.mark.parametrize("message", TRAINING_INNER, ids=lambda m: f"0x{m.msg_id:04x}-{type(m).__name__}")
def test_training_messages_round_trip_in_their_envelope(message: TrainingMessage) -> None:
    assert decode_training(message.msg_id, message.encode()) == message
    envelope = TrainingEnvelope.of(message, TERMINAL16, counter=9)
    downlink = message.msg_id & 0x8000
    if downlink:
        packet_message: Message = TrainingDownlink.of(envelope)
    else:
        packet_message = TrainingUplink.of(dataclasses.replace(envelope, signature=bytes(range(256))))
    h = header(packet_message.msg_id, Version.TRAINING)
    frames = encode_packets(h, packet_message)
    events = decode_all(*frames, dialect=Dialect.TRAINING)
    assert isinstance(events[-1], Packet)
    assert all(isinstance(e, PackageHeld) for e in events[:-1])
    got = events[-1].message
    assert got == packet_message
    assert isinstance(got, TrainingUplink) and got.message == message
    if len(frames) == 1:
        assert encode_packet(events[-1].header, got) == frames[0]


def test_minute_record_is_114_bytes_with_its_day_from_the_record_number() -> None:
    assert len(MINUTE.encode()) == 114
    assert MINUTE.start == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert str(MINUTE.course_code) == "1212130000"
    assert MINUTE.gnss.mileage_km == 98.7 and MINUTE.gnss.rpm == 1800


def test_training_platform_messages_round_trip() -> None:
    for message in (
        TrainingRegisterResponse(3, 0, "12345", "S000000000000001", TERMINAL16, "pw12", "MIIK...base64=="),
        TrainingRegisterResponse(3, 4),
        TrainingAuthenticate(T.replace(second=0), bytes(range(256))),
    ):
        wire = encode_packet(header(message.msg_id, Version.TRAINING), message)
        packet = decode_payload(only_frame(wire), Dialect.TRAINING)
        assert packet.message == message
        assert packet.header.version is Version.TRAINING


def only_frame(wire: bytes) -> bytes:
    d = Deframer()
    d.receive_data(wire)
    (event,) = d.events()
    assert isinstance(event, Frame)
    return event.payload


def test_training_header_is_told_from_a_2013_downlink_header() -> None:
    pr = PlatformResponse(1, 0x0200, 0)
    (std,) = decode_all(encode_packet(header(0x8001, Version.V2013), pr))
    (trn,) = decode_all(encode_packet(header(0x8001, Version.TRAINING), pr))
    assert isinstance(std, Packet) and std.header.version is Version.V2013
    assert isinstance(trn, Packet) and trn.header.version is Version.TRAINING
    assert trn.header.terminal == "1234567890123456"


def test_location_reads_south_west_and_training_extras() -> None:
    wire = encode_packet(header(0x0200, Version.TRAINING), dataclasses.replace(GNSS, status=0x0F, lat=-35.416))
    (event,) = decode_all(wire)
    assert isinstance(event, Packet) and isinstance(event.message, Location)
    loc = event.message
    assert loc.lat == -35.416 and loc.lon == -119.527
    assert loc.vehicle_speed_kmh == 25.5 and loc.alt is None and loc.rpm == 1800
    assert loc.time == T and loc.time.tzinfo is UTC


# --- the signature --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_signed_minute_record_verifies_after_the_wire_and_not_when_edited(key: rsa.RSAPrivateKey) -> None:
    envelope = sign_envelope(TrainingEnvelope.of(MINUTE, TERMINAL16, counter=3), key)
    assert len(envelope.signature) == 256
    wire = encode_packet(header(0x0900, Version.TRAINING), TrainingUplink.of(envelope))
    (event,) = decode_all(wire, dialect=Dialect.TRAINING)
    assert isinstance(event, Packet) and isinstance(event.message, TrainingUplink)
    got = event.message.envelope
    assert got == envelope and event.message.message == MINUTE
    verify_envelope(got, key.public_key())
    edited = dataclasses.replace(got, data=got.data[:-1] + bytes((got.data[-1] ^ 1,)))
    with pytest.raises(BadSignature):
        verify_envelope(edited, key.public_key())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(BadSignature):
        verify_envelope(got, other.public_key())
    with pytest.raises(BadSignature):
        verify_envelope(dataclasses.replace(got, signature=b""), key.public_key())


def test_signature_is_pkcs1_v15_over_the_bare_digest(key: rsa.RSAPrivateKey) -> None:
    import hashlib

    envelope = sign_envelope(TrainingEnvelope.of(MINUTE, TERMINAL16), key)
    n = key.public_key().public_numbers()
    em = pow(int.from_bytes(envelope.signature, "big"), n.e, n.n).to_bytes(256, "big")
    digest = hashlib.sha256(envelope.signed_bytes()).digest()
    assert em == b"\x00\x01" + b"\xff" * 221 + b"\x00" + digest


# --- framing and refusals -------------------------------------------------------------------------------------


def test_escapes_and_checksum() -> None:
    payload = encode_packet(header(0x0900, Version.V2013), UplinkPassthrough(0x7E, b"\x7d\x7e\x7d\x01"))
    assert payload.count(b"\x7e") == 2 and b"\x7d\x02" in payload and b"\x7d\x01\x01" in payload
    (event,) = decode_all(payload)
    assert isinstance(event, Packet) and event.message == UplinkPassthrough(0x7E, b"\x7d\x7e\x7d\x01")
    assert xor_checksum(b"") == 0 and xor_checksum(b"\x01\x02\x04") == 7


def _reasons(events: list[object]) -> list[str]:
    return [e.reason for e in events if isinstance(e, Refused)]


def test_refusals_name_their_reason() -> None:
    good = encode_packet(header(0x0002, Version.V2013), Heartbeat())
    bad_xor = good[:-2] + bytes((good[-2] ^ 0xFF,)) + b"\x7e"
    assert _reasons(decode_all(bad_xor)) == ["bad_checksum"]
    assert _reasons(decode_all(b"\x7e\x00\x02\x7d\x03" + good[4:])) == ["bad_escape"]
    assert _reasons(decode_all(b"\x7e\x01\x02\x03\x7e")) == ["frame_too_short"]
    assert _reasons(decode_all(good[:-3])) == ["truncated"]
    long_len = build_frame(bytes.fromhex("0002000501351122112200070102"))
    assert _reasons(decode_all(long_len)) == ["length_mismatch"]
    enc = build_frame(bytes.fromhex("000204010135112211220007aa"))
    (refused,) = decode_all(enc)
    assert isinstance(refused, Refused) and refused.reason == "encrypted_body" and refused.header is not None
    vendor = build_frame(bytes.fromhex("600600010135112211220007aa"))
    (unknown,) = decode_all(vendor)
    assert isinstance(unknown, Packet) and unknown.message == Unknown(0x6006, b"\xaa")
    with pytest.raises(UnknownMessageId) as exc:
        decode_payload(bytes.fromhex("600600010135112211220007aa"), strict=True)
    assert exc.value.reason == "unknown_vendor_id"


def test_oversized_frame_is_refused_and_the_next_one_still_decodes() -> None:
    good = encode_packet(header(0x0002, Version.V2013), Heartbeat())
    flood = b"\x7e" + b"\x01" * (3 * MAX_FRAME_SIZE) + b"\x7e" + good
    d = Deframer()
    for i in range(0, len(flood), 100):
        d.receive_data(flood[i : i + 100])
        assert d.buffered <= MAX_FRAME_SIZE + 100
    d.receive_data(b"")
    events = d.events()
    assert [type(e) for e in events] == [FrameRefused, Frame]
    assert isinstance(events[0], FrameRefused) and events[0].reason == "frame_too_large"
    assert _reasons(decode_all(b"x" * (2 * MAX_FRAME_SIZE + 5))) == ["junk", "junk", "junk"]


# --- sub-packages ---------------------------------------------------------------------------------------------


def test_subpackages_reassemble_in_any_order_and_expire_by_the_callers_clock() -> None:
    photo = TrainingUplink.of(
        dataclasses.replace(TrainingEnvelope.of(PhotoData("0000000001", bytes(3000)), TERMINAL16), signature=bytes(256))
    )
    frames = encode_packets(header(0x0900, Version.TRAINING, serial=65534), photo, max_body=1000)
    assert len(frames) == 4
    events = decode_all(*reversed(frames), dialect=Dialect.TRAINING)
    assert isinstance(events[-1], Packet) and events[-1].message == photo
    assert events[-1].header.serial == 65534

    d = Jt808Decoder(Dialect.TRAINING, reassembler=Reassembler(timeout=30))
    d.receive_data(frames[0], now=100.0)
    d.receive_data(frames[1], now=110.0)
    assert all(isinstance(e, PackageHeld) for e in d.events())
    d.receive_data(b"", now=131.0)
    (lost,) = d.events()
    assert isinstance(lost, Refused) and lost.reason == "reassembly_timeout" and lost.header is not None


def test_reassembly_is_bounded() -> None:
    r = Reassembler(max_messages=2, max_bytes=100)
    h = Header(0x0900, "1234567890123456", 1, Version.TRAINING, package_count=3, package_index=1)
    assert r.add(h, b"a" * 10, 0.0) is None
    assert r.add(dataclasses.replace(h, serial=10), b"a" * 10, 0.0) is None
    with pytest.raises(ProtocolError) as exc:
        r.add(dataclasses.replace(h, serial=20), b"a", 0.0)
    assert exc.value.reason == "reassembly_overflow"
    with pytest.raises(ProtocolError) as exc:
        r.add(dataclasses.replace(h, package_index=2, serial=2), b"a" * 90, 0.0)
    assert exc.value.reason == "reassembly_overflow"
    with pytest.raises(ProtocolError) as exc:
        r.add(dataclasses.replace(h, package_count=5000), b"a", 0.0)
    assert exc.value.reason == "too_many_packages"


# --- hypothesis: nothing but our errors -----------------------------------------------------------------------

SAMPLES = [encode_packet(header(m.msg_id, Version.V2013), m) for m in STANDARD_MESSAGES] + [
    encode_packet(
        header(0x0900, Version.TRAINING),
        TrainingUplink.of(dataclasses.replace(TrainingEnvelope.of(m, TERMINAL16), signature=bytes(256))),
    )
    for m in TRAINING_INNER
    if not m.msg_id & 0x8000
]


def _run(data: bytes, dialect: Dialect) -> None:
    d = Jt808Decoder(dialect)
    d.receive_data(data, 0.0)
    d.receive_data(b"", 1e6)
    for e in d.events():
        assert isinstance(e, Packet | Refused | PackageHeld)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(list(Dialect)))
def test_random_bytes_never_raise(data: bytes, dialect: Dialect) -> None:
    _run(data, dialect)
    _run(b"\x7e" + data + b"\x7e", dialect)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_frames_never_raise(frame: bytes, data: st.DataObject) -> None:
    raw = bytearray(frame[1:-1].replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")[:-1])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    mutated = bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw)
    for dialect in Dialect:
        try:
            decode_payload(mutated, dialect)
        except ProtocolError:
            pass
        _run(build_frame(mutated), dialect)
