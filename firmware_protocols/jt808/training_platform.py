"""The training platform's header-level messages: its register answer, authentication, and the type-0x13 envelope.

Envelope (inside 0x0900 uplink / 0x8900 downlink, after the type byte 0x13)::

    msg id WORD | attributes WORD | packet counter WORD | terminal number BYTE[16] | data length DWORD | data
    | signature BYTE[256]   (uplink only: RSA-2048, PKCS#1 v1.5 over the bare SHA-256 of all the fields before it)

Attributes: bit 0 backfill (sent late from the terminal's store), bit 1 reply wanted, bits 4-7 the hash
(2 = SHA-256). The envelope keeps its data bytes exactly as received (what was signed); ``message`` is their
decoded form.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Self

from firmware_protocols.jt808.base import Message, TrainingMessage
from firmware_protocols.jt808.errors import BodyError, EncodeError
from firmware_protocols.jt808.fields import (
    Reader,
    fixed_gbk,
    from_unix,
    gbk_fixed,
    gbk_text,
    text_gbk,
    to_unix,
    u8,
    u16,
    u32,
)
from firmware_protocols.jt808.header import Version
from firmware_protocols.jt808.messages import DownlinkPassthrough, UplinkPassthrough
from firmware_protocols.jt808.training import decode_training

TRAINING_PASSTHROUGH = 0x13
SIGNATURE_SIZE = 256  # RSA-2048
BACKFILL = 0x01
REPLY_WANTED = 0x02
HASH_SHA256 = 2
_ENVELOPE_HEAD = struct.Struct(">HHH16sI")  # 26 bytes


@dataclass(frozen=True, slots=True)
class TrainingRegisterResponse(Message):
    """0x8100 of the training platform: on success its number, the school's, the terminal's, and the
    terminal's certificate (base64 PKCS#12) with its password."""

    MSG_ID = 0x8100
    NAME = "register response"

    reply_serial: int
    result: int
    platform: str = ""
    institution: str = ""
    terminal_no: str = ""
    cert_password: str = ""
    certificate: str = ""

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        r = Reader(body)
        serial, result = r.u16("reply serial"), r.u8("result")
        if result != 0 or r.left == 0:
            r.end(cls.NAME)
            return cls(serial, result)
        platform = gbk_fixed(r.take(5, "platform"), "platform")
        institution = gbk_fixed(r.take(16, "institution"), "institution")
        terminal = gbk_fixed(r.take(16, "terminal number"), "terminal number")
        password = gbk_fixed(r.take(12, "certificate password"), "certificate password")
        return cls(serial, result, platform, institution, terminal, password, gbk_text(r.rest(), "certificate"))

    def encode(self, version: Version) -> bytes:
        head = u16(self.reply_serial, "reply serial") + u8(self.result, "result")
        if self.result != 0 or not (self.platform or self.certificate):
            return head
        return b"".join(
            (
                head,
                fixed_gbk(self.platform, 5, "platform"),
                fixed_gbk(self.institution, 16, "institution"),
                fixed_gbk(self.terminal_no, 16, "terminal number"),
                fixed_gbk(self.cert_password, 12, "certificate password"),
                text_gbk(self.certificate, "certificate"),
            )
        )


@dataclass(frozen=True, slots=True)
class TrainingAuthenticate(Message):
    """0x0102 of the training platform: a timestamp and its 256-byte RSA ciphertext made with the terminal's key."""

    MSG_ID = 0x0102
    NAME = "authenticate"

    timestamp: datetime
    ciphertext: bytes

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        r = Reader(body)
        stamp = from_unix(r.u32("timestamp"))
        cipher = r.rest()
        if len(cipher) != SIGNATURE_SIZE:
            raise BodyError(f"authentication ciphertext of {len(cipher)} bytes", "bad_signature_length")
        return cls(stamp, cipher)

    def encode(self, version: Version) -> bytes:
        if len(self.ciphertext) != SIGNATURE_SIZE:
            raise EncodeError(f"ciphertext of {len(self.ciphertext)} bytes", "bad_signature_length")
        return u32(to_unix(self.timestamp), "timestamp") + self.ciphertext


@dataclass(frozen=True, slots=True)
class TrainingEnvelope:
    """The envelope's fields; ``signature`` is b"" downlink."""

    msg_id: int
    attributes: int
    counter: int
    terminal: str
    data: bytes
    signature: bytes = b""

    @property
    def backfill(self) -> bool:
        return bool(self.attributes & BACKFILL)

    @property
    def reply_wanted(self) -> bool:
        return bool(self.attributes & REPLY_WANTED)

    @property
    def hash_algorithm(self) -> int:
        return (self.attributes >> 4) & 0x0F

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: every field before it."""
        try:
            head = _ENVELOPE_HEAD.pack(
                self.msg_id, self.attributes, self.counter, fixed_gbk(self.terminal, 16, "terminal"), len(self.data)
            )
        except struct.error as exc:
            raise EncodeError(f"envelope field out of range: {exc}", "value_out_of_range") from exc
        return head + self.data

    def encode(self) -> bytes:
        return self.signed_bytes() + self.signature

    @classmethod
    def decode(cls, raw: bytes, signed: bool) -> Self:
        if len(raw) < _ENVELOPE_HEAD.size:
            raise BodyError(f"training envelope of {len(raw)} bytes", "bad_envelope")
        msg_id, attributes, counter, terminal, length = _ENVELOPE_HEAD.unpack_from(raw)
        end = _ENVELOPE_HEAD.size + length
        if end > len(raw):
            raise BodyError(f"envelope says {length} data bytes, {len(raw) - 26} follow", "envelope_length_mismatch")
        signature = raw[end:]
        if signed and len(signature) != SIGNATURE_SIZE:
            raise BodyError(f"signature of {len(signature)} bytes, not {SIGNATURE_SIZE}", "bad_signature_length")
        if not signed and signature:
            raise BodyError(f"{len(signature)} bytes after a downlink envelope's data", "envelope_length_mismatch")
        data = raw[_ENVELOPE_HEAD.size : end]
        return cls(msg_id, attributes, counter, gbk_fixed(terminal, "terminal"), data, signature)

    @classmethod
    def of(cls, message: TrainingMessage, terminal: str, counter: int = 0, attributes: int = HASH_SHA256 << 4) -> Self:
        """An unsigned envelope around ``message`` (sign it with ``signing.sign_envelope``)."""
        return cls(message.msg_id, attributes, counter, terminal, message.encode())


@dataclass(frozen=True, slots=True)
class TrainingUplink(Message):
    """0x0900 type 0x13: a signed training message from the terminal."""

    MSG_ID = 0x0900
    NAME = "training uplink"
    SIGNED = True

    envelope: TrainingEnvelope
    message: TrainingMessage

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        if body[:1] != bytes((TRAINING_PASSTHROUGH,)):
            raise BodyError("not a training passthrough", "bad_envelope")
        envelope = TrainingEnvelope.decode(body[1:], cls.SIGNED)
        return cls(envelope, decode_training(envelope.msg_id, envelope.data))

    @classmethod
    def of(cls, envelope: TrainingEnvelope) -> Self:
        return cls(envelope, decode_training(envelope.msg_id, envelope.data))

    def encode(self, version: Version) -> bytes:
        return bytes((TRAINING_PASSTHROUGH,)) + self.envelope.encode()


@dataclass(frozen=True, slots=True)
class TrainingDownlink(TrainingUplink):
    """0x8900 type 0x13: a training message from the platform (unsigned)."""

    MSG_ID = 0x8900
    NAME = "training downlink"
    SIGNED = False


def decode_uplink_passthrough(body: bytes, version: Version) -> Message:
    if version is Version.TRAINING and body[:1] == b"\x13":
        return TrainingUplink.decode(body, version)
    return UplinkPassthrough.decode(body, version)


def decode_downlink_passthrough(body: bytes, version: Version) -> Message:
    if version is Version.TRAINING and body[:1] == b"\x13":
        return TrainingDownlink.decode(body, version)
    return DownlinkPassthrough.decode(body, version)
