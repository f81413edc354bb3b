"""JT/T 808 framing: ``7e | escaped(header + body + xor) | 7e`` found in a byte stream, checked, and built.

The ``Deframer`` is fed bytes as they arrive (``receive_data``) and hands out events (``next_event``): a ``Frame``
(the unescaped header + body, checksum verified and removed) or a ``FrameRefused`` with a reason:

- ``junk``: bytes outside any frame (a vendor's ASCII line, line noise); emitted when the next flag arrives or at
  end of data, in chunks of at most ``MAX_FRAME_SIZE`` bytes;
- ``bad_escape``: a ``7d`` not followed by ``01`` or ``02``;
- ``bad_checksum``: the XOR of the unescaped bytes does not match the last one;
- ``frame_too_short``: fewer bytes than the smallest header plus checksum;
- ``frame_too_large``: more than ``MAX_FRAME_SIZE`` bytes without a closing flag; the rest up to the next flag is
  discarded, so memory stays bounded whatever a peer sends;
- ``truncated``: a frame begun but not finished at end of data (``receive_data(b"")``).

A refused frame's closing flag is kept as the opening flag of the next one: a terminal that lost an opening flag
costs one frame, not two. Events never depend on how the input was split into ``receive_data`` calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

FLAG = 0x7E
ESCAPE = 0x7D
_FLAG_B = b"\x7e"
_ESC_B = b"\x7d"

#: Largest body a header can announce (10 length bits).
MAX_BODY = 1023
#: Largest header: JT/T 808-2019 with sub-package fields (17 + 4); the 2013 (12/16) and training (16/20) are smaller.
MAX_HEADER = 21
#: Smallest frame content: a 2013 header (12 bytes) and the checksum; a 0x0002 heartbeat is exactly this.
MIN_FRAME = 13
#: Most escaped bytes between two flags: every byte of the largest header + body + checksum escaped (doubled).
MAX_FRAME_SIZE = 2 * (MAX_HEADER + MAX_BODY + 1)


def xor_checksum(data: bytes) -> int:
    """XOR of all bytes, folded as one big integer (a few C-level operations instead of a per-byte loop)."""
    n = int.from_bytes(data, "little")
    width = len(data)
    while width > 1:
        half = (width + 1) >> 1
        bits = half << 3
        n = (n >> bits) ^ (n & ((1 << bits) - 1))
        width = half
    return n


def escape(data: bytes) -> bytes:
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    """Undo the escapes (check ``escapes_valid`` first: a stray ``7d`` is left as it is)."""
    return data.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")


def escapes_valid(data: bytes) -> bool:
    """Every ``7d`` starts an escape (``7d 01`` or ``7d 02``); an escape's second byte is never ``7d``."""
    n = data.count(_ESC_B)
    return n == 0 or n == data.count(b"\x7d\x01") + data.count(b"\x7d\x02")


def build_frame(payload: bytes) -> bytes:
    """Header + body -> the bytes on the wire (checksum appended, escaped, flagged)."""
    return b"\x7e" + escape(payload + bytes((xor_checksum(payload),))) + b"\x7e"


@dataclass(frozen=True, slots=True)
class Frame:
    """A checked frame: header + body, unescaped, without the checksum."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameRefused:
    """Bytes refused by the framing layer; ``data`` holds them as received (at most ``MAX_FRAME_SIZE``)."""

    reason: str
    data: bytes


FrameEvent = Frame | FrameRefused


def check_frame(content: bytes) -> Frame | FrameRefused:
    """The escaped bytes between two flags -> a checked ``Frame`` or the reason it is refused."""
    if _ESC_B in content:
        if not escapes_valid(content):
            return FrameRefused("bad_escape", content)
        raw = content.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
    else:
        raw = content
    if len(raw) < MIN_FRAME:
        return FrameRefused("frame_too_short", content)
    payload = raw[:-1]
    if xor_checksum(payload) != raw[-1]:
        return FrameRefused("bad_checksum", content)
    return Frame(payload)


class Deframer:
    """Streaming, bounded frame finder (sans-IO): ``receive_data(bytes)`` then ``next_event()`` until None."""

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._events: deque[FrameEvent] = deque()
        self._discarding = False  # inside an oversized frame: drop bytes up to the next flag
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        """Feed received bytes; ``b""`` means end of data (a frame still open is refused as truncated)."""
        if not data:
            self._eof = True
        else:
            self._buf += data
        self._scan()

    def next_event(self) -> FrameEvent | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[FrameEvent]:
        """Every event available now."""
        out = list(self._events)
        self._events.clear()
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _scan(self) -> None:
        buf = self._buf
        limit = self.max_frame_size
        emit = self._events.append
        pos = 0
        n = len(buf)
        while pos < n:
            if self._discarding:
                end = buf.find(_FLAG_B, pos)
                if end < 0:
                    pos = n
                    break
                self._discarding = False
                pos = end  # that flag may open the next frame
                continue
            start = buf.find(_FLAG_B, pos)
            if start < 0:
                # junk with no flag yet: hold it (bounded) so that its event does not depend on the split
                if n - pos > limit:
                    emit(FrameRefused("junk", bytes(buf[pos : pos + limit])))
                    pos += limit
                    continue
                break
            if start > pos:
                emit(FrameRefused("junk", bytes(buf[pos:start])))
                pos = start
                continue
            end = buf.find(_FLAG_B, start + 1, start + limit + 2)
            if end < 0:
                if n - start - 1 > limit:
                    emit(FrameRefused("frame_too_large", bytes(buf[start + 1 : start + 1 + limit])))
                    self._discarding = True
                    pos = start + 1 + limit
                    continue
                break
            if end == start + 1:  # two flags in a row: an empty frame, or the end of one and start of the next
                pos = end
                continue
            event = check_frame(bytes(buf[start + 1 : end]))
            emit(event)
            # a good frame consumes its closing flag; a refused one leaves it to open the next frame
            pos = end + 1 if type(event) is Frame else end
        if self._eof:
            rest = bytes(buf[pos:])
            if self._discarding:
                self._discarding = False
            elif rest[:1] == _FLAG_B:
                if len(rest) > 1:
                    emit(FrameRefused("truncated", rest))
            elif rest:
                emit(FrameRefused("junk", rest))
            pos = len(buf)
            self._eof = False
        if pos:
            del buf[:pos]
