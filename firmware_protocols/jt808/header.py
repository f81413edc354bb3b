"""JT/T 808 message headers: 2011/2013, 2019 and the 2016 training platform's own, read and written.

    2011/2013  id WORD | attributes WORD | terminal BCD[6]  | serial WORD                    [| count WORD | index WORD]
    2019       id WORD | attributes WORD | version BYTE | terminal BCD[10] | serial WORD    [| count | index]
    training   0x80 | id WORD | attributes WORD | terminal BCD[8] | serial WORD | reserved BYTE [| count | index]

Attributes: body length bits 0-9, encryption bits 10-12 (bit 10: RSA), sub-packages bit 13, and in 2019 the
version flag bit 14. The terminal number is kept as the hex of its BCD bytes (digits for a conforming terminal;
some sold devices put other nibbles there, and the number is still what identifies them).

The training header starts with ``0x80``, as does the id of every 2013 downlink message (0x8001, 0x8100 ...), so a
frame's dialect is told by ``Dialect``: ``STANDARD`` (2013 or 2019 by bit 14), ``TRAINING``, or ``AUTO`` (training
when the first byte is 0x80 and the training header's length field fits the frame, else standard).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from firmware_protocols.jt808.errors import EncodeError, HeaderError

TRAINING_VERSION_BYTE = 0x80

LENGTH_MASK = 0x03FF
ENCRYPTION_SHIFT = 10
ENCRYPTION_MASK = 0x07
SUBPACKAGE_BIT = 0x2000
VERSION_BIT = 0x4000

_H2013 = struct.Struct(">HH6sH")  # 12 bytes
_H2019 = struct.Struct(">HHB10sH")  # 17 bytes
_HTRAIN = struct.Struct(">BHH8sHB")  # 16 bytes
_PKG = struct.Struct(">HH")


class Version(Enum):
    """Header layout of a frame (2011 frames are read as 2013: their headers are the same)."""

    V2013 = "2013"
    V2019 = "2019"
    TRAINING = "training"


class Dialect(Enum):
    """Which headers a decoder accepts."""

    STANDARD = "standard"
    TRAINING = "training"
    AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Header:
    msg_id: int
    terminal: str
    serial: int
    version: Version = Version.V2013
    body_length: int = 0
    encryption: int = 0
    protocol_version: int = 1  # the 2019 header's version byte
    package_count: int = 0  # 0: not sub-packaged
    package_index: int = 0
    reserved: int = 0  # the training header's reserved byte
    attributes_reserved: int = 0  # bit 15 (and bit 14 outside 2019), kept for exact round trips

    @property
    def subpackaged(self) -> bool:
        return self.package_count > 0


def decode_header(payload: bytes, dialect: Dialect = Dialect.AUTO) -> tuple[Header, bytes]:
    """Header + body of a checked frame -> (Header, body). Raises ``HeaderError``."""
    if dialect is Dialect.TRAINING or (
        dialect is Dialect.AUTO and payload[:1] == b"\x80" and _training_fits(payload)
    ):
        return _decode_training(payload)
    return _decode_standard(payload)


def _training_fits(payload: bytes) -> bool:
    if len(payload) < _HTRAIN.size:
        return False
    attrs = (payload[3] << 8) | payload[4]
    size = _HTRAIN.size + (4 if attrs & SUBPACKAGE_BIT else 0)
    return len(payload) - size == attrs & LENGTH_MASK


def _decode_standard(payload: bytes) -> tuple[Header, bytes]:
    if len(payload) < _H2013.size:
        raise HeaderError(f"{len(payload)} bytes cannot hold a header", "header_too_short")
    msg_id, attrs = struct.unpack_from(">HH", payload)
    if attrs & VERSION_BIT:
        if len(payload) < _H2019.size:
            raise HeaderError(f"{len(payload)} bytes cannot hold a 2019 header", "header_too_short")
        _, _, proto, phone, serial = _H2019.unpack_from(payload)
        size = _H2019.size
        version = Version.V2019
        reserved_bits = attrs & 0x8000
    else:
        _, _, phone, serial = _H2013.unpack_from(payload)
        proto = 1
        size = _H2013.size
        version = Version.V2013
        reserved_bits = attrs & 0xC000
    return _finish(payload, msg_id, attrs, phone.hex(), serial, size, version, proto, 0, reserved_bits)


def _decode_training(payload: bytes) -> tuple[Header, bytes]:
    if len(payload) < _HTRAIN.size:
        raise HeaderError(f"{len(payload)} bytes cannot hold a training header", "header_too_short")
    vbyte, msg_id, attrs, terminal, serial, reserved = _HTRAIN.unpack_from(payload)
    if vbyte != TRAINING_VERSION_BYTE:
        raise HeaderError(f"training header starts with 0x{vbyte:02x}, not 0x80", "bad_version_byte")
    return _finish(
        payload, msg_id, attrs, terminal.hex(), serial, _HTRAIN.size, Version.TRAINING, 1, reserved, attrs & 0xC000
    )


def _finish(
    payload: bytes,
    msg_id: int,
    attrs: int,
    terminal: str,
    serial: int,
    size: int,
    version: Version,
    proto: int,
    reserved: int,
    reserved_bits: int,
) -> tuple[Header, bytes]:
    count = index = 0
    if attrs & SUBPACKAGE_BIT:
        if len(payload) < size + 4:
            raise HeaderError("sub-package fields missing", "header_too_short")
        count, index = _PKG.unpack_from(payload, size)
        size += 4
        if count == 0 or not 1 <= index <= count:
            raise HeaderError(f"package {index} of {count}", "bad_package_index")
    length = attrs & LENGTH_MASK
    if len(payload) - size != length:
        raise HeaderError(
            f"0x{msg_id:04x}: header says {length} body bytes, the frame holds {len(payload) - size}",
            "length_mismatch",
        )
    header = Header(
        msg_id,
        terminal,
        serial,
        version,
        length,
        (attrs >> ENCRYPTION_SHIFT) & ENCRYPTION_MASK,
        proto,
        count,
        index,
        reserved,
        reserved_bits,
    )
    return header, payload[size:]


def encode_header(header: Header, body_length: int) -> bytes:
    """The header bytes for a body of ``body_length`` bytes (the header's own ``body_length`` is ignored)."""
    if not 0 <= body_length <= LENGTH_MASK:
        raise EncodeError(f"body of {body_length} bytes: sub-package it (at most {LENGTH_MASK})", "body_too_long")
    attrs = body_length | (header.encryption & ENCRYPTION_MASK) << ENCRYPTION_SHIFT | header.attributes_reserved
    if header.package_count:
        attrs |= SUBPACKAGE_BIT
    terminal = _terminal_bytes(header)
    try:
        if header.version is Version.TRAINING:
            out = _HTRAIN.pack(TRAINING_VERSION_BYTE, header.msg_id, attrs, terminal, header.serial, header.reserved)
        elif header.version is Version.V2019:
            out = _H2019.pack(header.msg_id, attrs | VERSION_BIT, header.protocol_version, terminal, header.serial)
        else:
            out = _H2013.pack(header.msg_id, attrs, terminal, header.serial)
        if header.package_count:
            out += _PKG.pack(header.package_count, header.package_index)
    except struct.error as exc:
        raise EncodeError(f"header field out of range: {exc}", "value_out_of_range") from exc
    return out


_TERMINAL_BYTES = {Version.V2013: 6, Version.V2019: 10, Version.TRAINING: 8}


def _terminal_bytes(header: Header) -> bytes:
    width = _TERMINAL_BYTES[header.version]
    text = header.terminal.rjust(2 * width, "0")
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise EncodeError(f"terminal {header.terminal!r} is not BCD", "bad_digits") from exc
    if len(raw) != width:
        raise EncodeError(f"terminal {header.terminal!r} longer than {2 * width} digits", "bad_digits")
    return raw
