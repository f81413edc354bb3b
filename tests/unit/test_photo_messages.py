"""``up/photos`` and its ack (contract v1): round trips, every refusal with its reason, and the ack told apart from a
batch's on ``down/acks``."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_protocols.errors import LocalProtocolError, MalformedMessage, UnsupportedVersion
from firmware_protocols.messages import (
    MAX_MESSAGE_BYTES,
    MAX_PHOTO_BYTES,
    Ack,
    AckResult,
    AckStatus,
    PhotoAck,
    PhotoStatus,
    PhotoUpload,
    decode_ack,
    photo_sha256,
)

T = "T000000000000001"
AT = datetime(2026, 11, 27, 2, 0, 5, tzinfo=UTC)
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"


def upload(jpeg: bytes = JPEG) -> PhotoUpload:
    return PhotoUpload.of(T, 1, 7, AT, jpeg)


def tampered(**fields: object) -> bytes:
    obj = json.loads(upload().encode())
    obj.update(fields)
    return json.dumps(obj).encode()


def test_a_photo_round_trips_and_names_its_sha256() -> None:
    photo = upload()
    data = photo.encode()
    assert PhotoUpload.decode(data) == photo
    assert PhotoUpload.decode(data).encode() == data
    obj = json.loads(data)
    assert obj["sha256"] == photo_sha256(JPEG) == photo.sha256 and (obj["chain"], obj["seq"]) == (1, 7)
    assert obj["at"] == "2026-11-27T02:00:05Z" and base64.b64decode(obj["jpeg"]) == JPEG
    assert "jpeg=" not in repr(photo)  # the bytes stay out of logs


@given(st.binary(max_size=2048), st.integers(1, 2**31), st.integers(0, 2**40))
def test_any_jpeg_round_trips(tail: bytes, chain: int, seq: int) -> None:
    photo = PhotoUpload.of(T, chain, seq, AT, b"\xff\xd8\xff" + tail)
    assert PhotoUpload.decode(photo.encode()) == photo


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (tampered(sha256=photo_sha256(b"other")), "photo_hash_mismatch"),
        (tampered(jpeg=base64.b64encode(b"GIF89a").decode(), sha256=photo_sha256(b"GIF89a")), "not_jpeg"),
        (tampered(jpeg="not base64!"), "bad_photo"),
        (tampered(sha256="ABC"), "bad_photo"),
        (tampered(chain=0), "bad_photo"),
        (tampered(seq=-1), "bad_photo"),
        (tampered(seq=True), "bad_photo"),
        (tampered(terminal="T1"), "bad_terminal"),
        (tampered(at="yesterday"), "bad_time"),
        (b"\xff" * 10, "bad_json"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
def test_a_bad_photo_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage) as err:
        PhotoUpload.decode(data)
    assert err.value.reason == reason


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(UnsupportedVersion):
        PhotoUpload.decode(tampered(v=2))


def test_a_photo_too_large_is_refused_both_ways() -> None:
    big = b"\xff\xd8\xff" + bytes(MAX_PHOTO_BYTES)
    with pytest.raises(LocalProtocolError) as local:
        PhotoUpload.of(T, 1, 1, AT, big).encode()
    assert local.value.reason == "too_large"
    obj = json.loads(upload().encode())
    obj.update(jpeg=base64.b64encode(big).decode(), sha256=photo_sha256(big))
    with pytest.raises(MalformedMessage) as remote:
        PhotoUpload.decode(json.dumps(obj).encode())
    assert remote.value.reason == "too_large"
    # the largest photo allowed fits one message
    assert len(PhotoUpload.of(T, 1, 1, AT, big[:MAX_PHOTO_BYTES]).encode()) < MAX_MESSAGE_BYTES


def test_photo_acks_round_trip_and_are_told_apart_from_batch_acks() -> None:
    sha = photo_sha256(JPEG)
    for ack in (PhotoAck(sha, PhotoStatus.STORED), PhotoAck(sha, PhotoStatus.REJECTED, "not_named")):
        assert PhotoAck.decode(ack.encode()) == ack == decode_ack(ack.encode())
    batch = Ack("b1", (AckResult(1, 2, "ab" * 32, AckStatus.STORED),))
    assert decode_ack(batch.encode()) == batch
    assert json.loads(PhotoAck(sha, PhotoStatus.PENDING).encode()) == {"v": 1, "photo": sha, "status": "pending"}
    with pytest.raises(MalformedMessage):
        decode_ack(b'{"v":1,"photo":"' + sha.encode() + b'","status":"maybe"}')
    with pytest.raises(MalformedMessage):
        decode_ack(b'{"v":1,"photo":"xyz","status":"stored"}')
