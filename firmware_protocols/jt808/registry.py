"""Message ids and the registry that turns a checked header + body into a typed message, and back.

Two tables: JT/T 808 (2011/2013/2019) and the training platform's, which replaces the register answer,
authentication and passthrough with its own. Ids without a decoder become ``Unknown`` (the body kept), or, when
the caller asks for ``strict``, an ``UnknownMessageId("unknown_vendor_id")``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from firmware_protocols.jt808.base import Message
from firmware_protocols.jt808.errors import UnknownMessageId
from firmware_protocols.jt808.header import Header, Version
from firmware_protocols.jt808.location import Location, LocationBatch
from firmware_protocols.jt808.messages import (
    Authenticate,
    Heartbeat,
    PlatformResponse,
    Register,
    RegisterResponse,
    TerminalResponse,
    Unknown,
)
from firmware_protocols.jt808.training import TRAINING_MESSAGES, decode_training
from firmware_protocols.jt808.training_platform import (
    TrainingAuthenticate,
    TrainingRegisterResponse,
    decode_downlink_passthrough,
    decode_uplink_passthrough,
)

__all__ = ["STANDARD", "TRAINING", "TRAINING_MESSAGES", "MessageId", "TrainingId", "decode_body", "decode_training"]


class MessageId(IntEnum):
    TERMINAL_RESPONSE = 0x0001
    HEARTBEAT = 0x0002
    REGISTER = 0x0100
    AUTHENTICATE = 0x0102
    LOCATION = 0x0200
    LOCATION_BATCH = 0x0704
    UPLINK_PASSTHROUGH = 0x0900
    PLATFORM_RESPONSE = 0x8001
    REGISTER_RESPONSE = 0x8100
    DOWNLINK_PASSTHROUGH = 0x8900


class TrainingId(IntEnum):
    COACH_LOGIN = 0x0101
    COACH_LOGOUT = 0x0102
    STUDENT_LOGIN = 0x0201
    STUDENT_LOGOUT = 0x0202
    MINUTE_RECORD = 0x0203
    REUPLOAD_REPLY = 0x0205
    PHOTO_NOW_REPLY = 0x0301
    PHOTO_QUERY_REPLY = 0x0302
    PHOTO_QUERY_RESULT = 0x0303
    PHOTO_UPLOAD_REPLY = 0x0304
    PHOTO_INIT = 0x0305
    PHOTO_DATA = 0x0306
    TERMINAL_PARAMETERS_REPLY = 0x0501
    REUPLOAD_REQUEST = 0x8205
    TERMINAL_PARAMETERS = 0x8501
    TRAINING_BAN = 0x8502


Decoder = Callable[[bytes, Version], Message]

STANDARD: dict[int, Decoder] = {
    MessageId.TERMINAL_RESPONSE: TerminalResponse.decode,
    MessageId.HEARTBEAT: Heartbeat.decode,
    MessageId.REGISTER: Register.decode,
    MessageId.AUTHENTICATE: Authenticate.decode,
    MessageId.LOCATION: Location.decode,
    MessageId.LOCATION_BATCH: LocationBatch.decode,
    MessageId.UPLINK_PASSTHROUGH: decode_uplink_passthrough,
    MessageId.PLATFORM_RESPONSE: PlatformResponse.decode,
    MessageId.REGISTER_RESPONSE: RegisterResponse.decode,
    MessageId.DOWNLINK_PASSTHROUGH: decode_downlink_passthrough,
}

TRAINING: dict[int, Decoder] = {
    **STANDARD,
    MessageId.REGISTER_RESPONSE: TrainingRegisterResponse.decode,
    MessageId.AUTHENTICATE: TrainingAuthenticate.decode,
}


def decode_body(header: Header, body: bytes, strict: bool = False) -> Message:
    """A checked body -> its typed message. Raises ``BodyError`` (or ``UnknownMessageId`` when strict)."""
    table = TRAINING if header.version is Version.TRAINING else STANDARD
    decoder = table.get(header.msg_id)
    if decoder is None:
        if strict:
            raise UnknownMessageId(f"no decoder for message id 0x{header.msg_id:04x}", "unknown_vendor_id")
        return Unknown(header.msg_id, body)
    return decoder(body, header.version)
