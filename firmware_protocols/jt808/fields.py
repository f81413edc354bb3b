"""Field codecs shared by every JT/T 808 message: a bounds-checked reader, BCD digits and times, GBK text.

Times on the wire are BCD ``YYMMDDhhmmss`` in Beijing time (GMT+8); they are turned into aware UTC here and back.
An all-zero time (a terminal without a fix yet) decodes to None and encodes back to zeros.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, time, timedelta

from firmware_protocols.identifiers import BEIJING
from firmware_protocols.jt808.errors import BodyError, EncodeError

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_ZERO_TIME = bytes(6)
_DIGITS = frozenset("0123456789")
_BEIJING_OFFSET = timedelta(hours=8)  # Beijing time has had no DST since 1991


class Reader:
    """Reads a body front to back; running past its end is a ``BodyError("body_too_short")`` naming the field."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise BodyError(f"{what}: needs {n} bytes, {len(self.data) - self.pos} left", "body_too_short")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self, what: str) -> int:
        value: int = _U8.unpack(self.take(1, what))[0]
        return value

    def u16(self, what: str) -> int:
        value: int = _U16.unpack(self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = _U32.unpack(self.take(4, what))[0]
        return value

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def end(self, what: str) -> None:
        if self.pos != len(self.data):
            raise BodyError(f"{what}: {len(self.data) - self.pos} bytes after the last field", "body_too_long")


def u8(value: int, what: str) -> bytes:
    return _pack(_U8, value, 0xFF, what)


def u16(value: int, what: str) -> bytes:
    return _pack(_U16, value, 0xFFFF, what)


def u32(value: int, what: str) -> bytes:
    return _pack(_U32, value, 0xFFFFFFFF, what)


def _pack(fmt: struct.Struct, value: int, top: int, what: str) -> bytes:
    if not 0 <= value <= top:
        raise EncodeError(f"{what} {value} out of range 0..{top}", "value_out_of_range")
    return fmt.pack(value)


# --- BCD ------------------------------------------------------------------------------------------------------


def bcd_digits(raw: bytes, what: str) -> str:
    text = raw.hex()
    if not _DIGITS.issuperset(text):
        raise BodyError(f"{what} is not BCD: {text}", "bad_bcd")
    return text


def digits_bcd(text: str, nbytes: int, what: str) -> bytes:
    if len(text) != 2 * nbytes or not _DIGITS.issuperset(text):
        raise EncodeError(f"{what} must be {2 * nbytes} digits, got {text!r}", "bad_digits")
    return bytes.fromhex(text)


def bcd_time(raw: bytes, what: str = "time") -> datetime | None:
    """BCD ``YYMMDDhhmmss`` (Beijing) -> aware UTC; all zeros -> None."""
    if raw == _ZERO_TIME:
        return None
    d = raw.hex()
    if not d.isdigit():  # hex digits a-f are not digits
        raise BodyError(f"{what} is not BCD: {d}", "bad_bcd")
    v = int(d)
    v, second = divmod(v, 100)
    v, minute = divmod(v, 100)
    v, hour = divmod(v, 100)
    v, day = divmod(v, 100)
    year, month = divmod(v, 100)
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=UTC) - _BEIJING_OFFSET
    except ValueError as exc:
        raise BodyError(f"{what} is not a date: {d}", "bad_time") from exc


def time_bcd(t: datetime | None, what: str = "time") -> bytes:
    if t is None:
        return _ZERO_TIME
    if t.tzinfo is None:
        raise EncodeError(f"{what} must be an aware datetime", "naive_time")
    local = t.astimezone(BEIJING)
    if not 2000 <= local.year <= 2099:
        raise EncodeError(f"{what} {t} outside 2000-2099", "value_out_of_range")
    return bytes.fromhex(local.strftime("%y%m%d%H%M%S"))


def bcd_time_of_day(raw: bytes, what: str) -> time:
    """BCD ``HHmmss`` -> a time of day (Beijing; the date comes from elsewhere, e.g. a record number)."""
    d = bcd_digits(raw, what)
    try:
        return time(int(d[0:2]), int(d[2:4]), int(d[4:6]))
    except ValueError as exc:
        raise BodyError(f"{what} is not a time of day: {d}", "bad_time") from exc


def time_of_day_bcd(t: time) -> bytes:
    return bytes.fromhex(f"{t.hour:02d}{t.minute:02d}{t.second:02d}")


def to_unix(t: datetime) -> int:
    return int(t.timestamp())


def from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# --- GBK text -------------------------------------------------------------------------------------------------


def gbk_text(raw: bytes, what: str) -> str:
    """Variable-length GBK text (the rest of a body, or a length-prefixed field)."""
    try:
        return raw.decode("gbk")
    except UnicodeDecodeError as exc:
        raise BodyError(f"{what} is not GBK text: {raw.hex()}", "bad_text") from exc


def gbk_fixed(raw: bytes, what: str) -> str:
    """A fixed-width GBK field, trailing NUL padding removed (GBK never has a 0x00 inside a character)."""
    return gbk_text(raw.rstrip(b"\x00"), what)


def text_gbk(text: str, what: str) -> bytes:
    try:
        return text.encode("gbk")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"{what} cannot be written in GBK: {text!r}", "bad_text") from exc


def fixed_gbk(text: str, width: int, what: str) -> bytes:
    raw = text_gbk(text, what)
    if len(raw) > width:
        raise EncodeError(f"{what} is {len(raw)} bytes in GBK, the field holds {width}", "text_too_long")
    return raw.ljust(width, b"\x00")
