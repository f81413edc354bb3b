"""The whole JT/T 808 path, sans-IO: bytes in -> ``Packet`` (header + typed message) or ``Refused``; packets out.

``Jt808Decoder`` (h11-style) owns a ``Deframer`` and a ``Reassembler``: ``receive_data(bytes, now)`` then
``next_event()`` until None. ``now`` is the caller's monotonic clock, used only to expire half-received
sub-packaged messages. ``decode_payload`` and ``encode_packet``/``encode_packets`` are the same steps for one frame.
Every refusal carries a reason code, the bytes, and the header when it was read (so a gateway can answer 0x8001).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field

from firmware_protocols.errors import ProtocolError
from firmware_protocols.jt808.base import Message
from firmware_protocols.jt808.errors import EncryptedBody
from firmware_protocols.jt808.framing import MAX_BODY, MAX_FRAME_SIZE, Deframer, Frame, build_frame
from firmware_protocols.jt808.header import Dialect, Header, decode_header, encode_header
from firmware_protocols.jt808.reassembly import Reassembler
from firmware_protocols.jt808.registry import decode_body


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded message: its header (of package 1 for a reassembled one) and its typed body; ``body`` holds the
    body bytes exactly as received (a reassembled one joined), so that a verifier keeps what was signed."""

    header: Header
    message: Message
    body: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Refused:
    """Input refused: ``reason`` is a code of ``jt808.errors``; ``data`` the bytes; ``header`` when it was read."""

    reason: str
    detail: str
    data: bytes
    header: Header | None = None


@dataclass(frozen=True, slots=True)
class PackageHeld:
    """One package of a sub-packaged message, kept until the others arrive (a gateway acknowledges it)."""

    header: Header


Event = Packet | PackageHeld | Refused


def decode_payload(payload: bytes, dialect: Dialect = Dialect.AUTO, strict: bool = False) -> Packet:
    """A checked frame's header + body -> ``Packet`` (no sub-package handling). Raises ``ProtocolError``s."""
    header, body = decode_header(payload, dialect)
    if header.encryption:
        raise EncryptedBody(f"0x{header.msg_id:04x}: body encrypted (scheme {header.encryption})", "encrypted_body")
    return Packet(header, decode_body(header, body, strict), body)


def encode_packet(header: Header, message: Message) -> bytes:
    """Header + message -> one frame on the wire (the header's length field is set from the body)."""
    body = message.encode(header.version)
    return build_frame(encode_header(header, len(body)) + body)


def encode_packets(header: Header, message: Message, max_body: int = MAX_BODY) -> list[bytes]:
    """Like ``encode_packet``, sub-packaged when the body is longer than ``max_body``; package n gets serial + n - 1."""
    body = message.encode(header.version)
    if len(body) <= max_body:
        return [build_frame(encode_header(header, len(body)) + body)]
    chunks = [body[i : i + max_body] for i in range(0, len(body), max_body)]
    out = []
    for n, chunk in enumerate(chunks, 1):
        h = dataclasses.replace(
            header, serial=(header.serial + n - 1) & 0xFFFF, package_count=len(chunks), package_index=n
        )
        out.append(build_frame(encode_header(h, len(chunk)) + chunk))
    return out


class Jt808Decoder:
    """Stream decoder for one connection (sans-IO). Never raises on input: refusals are ``Refused`` events."""

    def __init__(
        self,
        dialect: Dialect = Dialect.AUTO,
        *,
        strict: bool = False,
        max_frame_size: int = MAX_FRAME_SIZE,
        reassembler: Reassembler | None = None,
    ) -> None:
        self.dialect = dialect
        self.strict = strict
        self._deframer = Deframer(max_frame_size)
        self._reassembler = reassembler if reassembler is not None else Reassembler()
        self._events: deque[Event] = deque()

    def receive_data(self, data: bytes, now: float = 0.0) -> None:
        """Feed received bytes (``b""`` at end of data); ``now`` expires stale sub-packaged messages."""
        deframer = self._deframer
        deframer.receive_data(data)
        emit = self._events.append
        while (event := deframer.next_event()) is not None:
            if isinstance(event, Frame):
                emit(self._decode(event.payload, now))
            else:
                emit(Refused(event.reason, f"framing: {event.reason}", event.data))
        for lost in self._reassembler.expire(now):
            emit(
                Refused(
                    "reassembly_timeout",
                    f"0x{lost.header.msg_id:04x}: {lost.received} of {lost.total} packages before the timeout",
                    b"",
                    lost.header,
                )
            )

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    def _decode(self, payload: bytes, now: float) -> Event:
        header: Header | None = None
        try:
            header, body = decode_header(payload, self.dialect)
            if header.encryption:
                raise EncryptedBody(f"body encrypted (scheme {header.encryption})", "encrypted_body")
            if header.package_count:
                joined = self._reassembler.add(header, body, now)
                if joined is None:
                    return PackageHeld(header)
                header, body = joined
            return Packet(header, decode_body(header, body, self.strict), body)
        except ProtocolError as exc:
            return Refused(exc.reason, str(exc), payload, header)
