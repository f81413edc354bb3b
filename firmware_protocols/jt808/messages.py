"""JT/T 808 platform messages: responses, heartbeat, registration, authentication, passthrough, unknown ids.

Layouts differ by header version where the standards differ (registration: 2011 / 2013 / 2019 / training;
authentication: 2013 / 2019; the training platform's own register answer and authentication are in
``training_platform``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from firmware_protocols.jt808.base import Message
from firmware_protocols.jt808.errors import BodyError
from firmware_protocols.jt808.fields import Reader, fixed_gbk, gbk_fixed, gbk_text, text_gbk, u8, u16
from firmware_protocols.jt808.header import Version

# results of 0x0001 / 0x8001
RESULT_OK = 0
RESULT_FAILED = 1
RESULT_BAD_MESSAGE = 2
RESULT_NOT_SUPPORTED = 3
RESULT_ALARM_ACK = 4


@dataclass(frozen=True, slots=True)
class TerminalResponse(Message):
    """0x0001 the terminal's general response."""

    MSG_ID = 0x0001
    NAME = "terminal response"

    reply_serial: int
    reply_id: int
    result: int

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        r = Reader(body)
        out = cls(r.u16("reply serial"), r.u16("reply id"), r.u8("result"))
        r.end(cls.NAME)
        return out

    def encode(self, version: Version) -> bytes:
        return u16(self.reply_serial, "reply serial") + u16(self.reply_id, "reply id") + u8(self.result, "result")


@dataclass(frozen=True, slots=True)
class PlatformResponse(TerminalResponse):
    """0x8001 the platform's general response (3 = message not supported)."""

    MSG_ID = 0x8001
    NAME = "platform response"


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """0x0002 heartbeat (empty body)."""

    MSG_ID = 0x0002
    NAME = "heartbeat"

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        if body:
            raise BodyError(f"heartbeat with {len(body)} body bytes", "body_too_long")
        return cls()

    def encode(self, version: Version) -> bytes:
        return b""


#: (maker, model, terminal id, IMEI) widths of 0x0100 by layout.
_REGISTER_WIDTHS = {"2011": (5, 8, 7, 0), "2013": (5, 20, 7, 0), "2019": (11, 30, 30, 0), "training": (5, 20, 7, 15)}
_REGISTER_2013_MIN = 2 + 2 + 5 + 20 + 7 + 1


@dataclass(frozen=True, slots=True)
class Register(Message):
    """0x0100 terminal registration. ``layout`` is "2011", "2013", "2019" or "training" (which adds the IMEI)."""

    MSG_ID = 0x0100
    NAME = "register"

    province: int
    city: int
    maker: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str
    imei: str = ""
    layout: str = "2013"

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        if version is Version.V2013:
            layout = "2013" if len(body) >= _REGISTER_2013_MIN else "2011"
        else:
            layout = version.value
        w_maker, w_model, w_id, w_imei = _REGISTER_WIDTHS[layout]
        r = Reader(body)
        province, city = r.u16("province"), r.u16("city")
        maker = gbk_fixed(r.take(w_maker, "maker"), "maker")
        model = gbk_fixed(r.take(w_model, "model"), "model")
        terminal_id = gbk_fixed(r.take(w_id, "terminal id"), "terminal id")
        imei = gbk_fixed(r.take(w_imei, "imei"), "imei") if w_imei else ""
        color = r.u8("plate color")
        plate = gbk_text(r.rest(), "plate")
        return cls(province, city, maker, model, terminal_id, color, plate, imei, layout)

    def encode(self, version: Version) -> bytes:
        w_maker, w_model, w_id, w_imei = _REGISTER_WIDTHS[self.layout]
        return b"".join(
            (
                u16(self.province, "province"),
                u16(self.city, "city"),
                fixed_gbk(self.maker, w_maker, "maker"),
                fixed_gbk(self.model, w_model, "model"),
                fixed_gbk(self.terminal_id, w_id, "terminal id"),
                fixed_gbk(self.imei, w_imei, "imei") if w_imei else b"",
                u8(self.plate_color, "plate color"),
                text_gbk(self.plate, "plate"),
            )
        )


@dataclass(frozen=True, slots=True)
class RegisterResponse(Message):
    """0x8100 (JT/T 808): result 0 carries the authentication code the terminal sends in 0x0102."""

    MSG_ID = 0x8100
    NAME = "register response"

    reply_serial: int
    result: int
    auth_code: str = ""

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        r = Reader(body)
        serial, result = r.u16("reply serial"), r.u8("result")
        return cls(serial, result, gbk_text(r.rest(), "auth code"))

    def encode(self, version: Version) -> bytes:
        return u16(self.reply_serial, "reply serial") + u8(self.result, "result") + text_gbk(self.auth_code, "code")


@dataclass(frozen=True, slots=True)
class Authenticate(Message):
    """0x0102 (JT/T 808): 2013 the code alone; 2019 length-prefixed code, IMEI[15], software version[20]."""

    MSG_ID = 0x0102
    NAME = "authenticate"

    auth_code: str
    imei: str = ""
    software_version: str = ""

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        if version is not Version.V2019:
            return cls(gbk_text(body, "auth code"))
        r = Reader(body)
        code = gbk_text(r.take(r.u8("code length"), "auth code"), "auth code")
        imei = gbk_fixed(r.take(15, "imei"), "imei")
        software = gbk_fixed(r.take(20, "software version"), "software version")
        r.end(cls.NAME)
        return cls(code, imei, software)

    def encode(self, version: Version) -> bytes:
        code = text_gbk(self.auth_code, "auth code")
        if version is not Version.V2019:
            return code
        return (
            u8(len(code), "code length")
            + code
            + fixed_gbk(self.imei, 15, "imei")
            + fixed_gbk(self.software_version, 20, "software version")
        )


@dataclass(frozen=True, slots=True)
class UplinkPassthrough(Message):
    """0x0900 data passthrough of a type other than the training envelope: ``kind`` BYTE + content."""

    MSG_ID = 0x0900
    NAME = "uplink passthrough"

    kind: int
    content: bytes

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        if not body:
            raise BodyError("passthrough without a type byte", "body_too_short")
        return cls(body[0], body[1:])

    def encode(self, version: Version) -> bytes:
        return u8(self.kind, "passthrough type") + self.content


@dataclass(frozen=True, slots=True)
class DownlinkPassthrough(UplinkPassthrough):
    """0x8900 downlink data passthrough."""

    MSG_ID = 0x8900
    NAME = "downlink passthrough"


@dataclass(frozen=True, slots=True)
class Unknown(Message):
    """A message id without a decoder here (vendor ids, ids not built yet): the body as it came."""

    NAME = "unknown"

    id: int
    body: bytes

    @property
    def msg_id(self) -> int:
        return self.id

    def encode(self, version: Version) -> bytes:
        return self.body
