"""Sub-package reassembly: the packages of one long message joined back, in bounded buffers, expired by the caller.

A message is known by (terminal, id, package count, serial of package 1); packages may arrive in any order and
twice (a retransmission replaces the first copy). Every bound is a constant below; a package beyond one is refused
with a reason, and a message whose packages stop coming is dropped when ``expire(now)`` finds it older than the
timeout. ``now`` is any monotonic number of seconds the caller owns (sans-IO: no clock is read here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from firmware_protocols.jt808.errors import ReassemblyError
from firmware_protocols.jt808.header import Header

#: Packages of one message: a 0x0306 photo of ~1 MiB in ~1 KiB packages; more is not a photo.
MAX_PACKAGES = 1024
#: Messages being reassembled at once per connection: a terminal sends one photo at a time, a few is generous.
MAX_PENDING_MESSAGES = 8
#: Bytes held for all pending messages per connection.
MAX_PENDING_BYTES = 2 * 1024 * 1024
#: Seconds a message may take between its first and its last package before it is dropped.
REASSEMBLY_TIMEOUT_S = 120.0

_Key = tuple[str, int, int, int]


@dataclass
class _Pending:
    first: Header
    total: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


@dataclass(frozen=True, slots=True)
class Incomplete:
    """A message dropped by ``expire``: its first header, packages received and expected."""

    header: Header
    received: int
    total: int


class Reassembler:
    def __init__(
        self,
        timeout: float = REASSEMBLY_TIMEOUT_S,
        max_packages: int = MAX_PACKAGES,
        max_messages: int = MAX_PENDING_MESSAGES,
        max_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.timeout = timeout
        self.max_packages = max_packages
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._pending: dict[_Key, _Pending] = {}
        self._bytes = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def add(self, header: Header, body: bytes, now: float) -> tuple[Header, bytes] | None:
        """One package in; the first package's header (package fields cleared) and the whole body once complete."""
        total, index = header.package_count, header.package_index
        if total > self.max_packages:
            raise ReassemblyError(f"{total} packages (at most {self.max_packages})", "too_many_packages")
        key = (header.terminal, header.msg_id, total, (header.serial - index + 1) & 0xFFFF)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.max_messages:
                raise ReassemblyError(f"{len(self._pending)} messages already pending", "reassembly_overflow")
            pending = _Pending(header, total, now)
        old = pending.parts.get(index)
        grow = len(body) - (len(old) if old is not None else 0)
        if self._bytes + grow > self.max_bytes:
            raise ReassemblyError(
                f"{self._bytes + grow} bytes pending (at most {self.max_bytes})", "reassembly_overflow"
            )
        self._pending[key] = pending
        pending.parts[index] = body
        pending.size += grow
        self._bytes += grow
        if index == 1:
            pending.first = header
        if len(pending.parts) < total:
            return None
        del self._pending[key]
        self._bytes -= pending.size
        whole = b"".join(pending.parts[i] for i in range(1, total + 1))
        first = dataclasses.replace(pending.first, package_count=0, package_index=0, body_length=len(whole))
        return first, whole

    def expire(self, now: float) -> list[Incomplete]:
        """Drop the messages begun more than ``timeout`` seconds before ``now``."""
        out: list[Incomplete] = []
        for key, pending in list(self._pending.items()):
            if now - pending.started > self.timeout:
                del self._pending[key]
                self._bytes -= pending.size
                out.append(Incomplete(pending.first, len(pending.parts), pending.total))
        return out
