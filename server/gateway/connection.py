"""One national terminal's TCP connection: the protocol's states, their deadlines, and the replies it wants.

States (a transition table, :data:`ALLOWED`)::

    CONNECTED --0x0100 ok--> REGISTERED --0x0102 ok--> AUTHENTICATED
    CONNECTED --0x0102 ok--------------------------> AUTHENTICATED   (a terminal registered on an earlier connection)

Deadlines: from the connection to AUTHENTICATED at most ``config.auth_timeout_s``; once authenticated, at most
``config.idle_timeout_s`` between two frames (heartbeats every 30 s keep a quiet terminal alive). The gateway's
sweeper enforces both.

Replies: 0x8100 to 0x0100 (0 ok, 2 no such vehicle, 4 no such terminal); 0x8001 to everything else the terminal
sends (0 ok, 1 failed, 2 bad message, 3 not supported), a training envelope's 0x8001 only after its record is
committed; 0x8900/0x8205 when a gap opens in the terminal's minute records. Sub-packaged messages are answered once,
whole, against the serial of their first package.

Refusals and what follows (every one is counted by reason and logged):

==============================  =====================================================================  =========
reason                          what                                                                   closes?
==============================  =====================================================================  =========
bad_checksum, bad_escape, junk,  a frame the framing layer refuses                                      after the
frame_too_short, truncated                                                                              limit
frame_too_large                  more bytes than a frame can hold without a closing flag                yes
bad body / header reasons        a checked frame whose header or body does not decode (0x8001 result 2)  after the
                                                                                                        limit
flood                            frames faster than ``flood_rate`` (burst ``flood_burst``), or a backlog yes
not_authenticated                traffic before 0x0102 succeeded (0x8001 result 1)                      after a few
auth_timeout / idle_timeout      a deadline passed                                                      yes
unknown_terminal, plate_mismatch 0x0100/0x0102 of a terminal or car not registered here                 yes
terminal_certificate_mismatch    0x0102 not signed by the key registered for the header's number        yes
stale/replayed_authentication    0x0102 with an old or already used timestamp                           yes
terminal_mismatch                a header or envelope naming another terminal than the authenticated    yes
bad_signature                    an edited or forged envelope (alarm)                                   yes
replayed_envelope                the exact bytes of a stored envelope: answered OK, stored once         no
not_supported                    an id without a handler here (0x8001 result 3)                         no
==============================  =====================================================================  =========
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from enum import Enum
from typing import TYPE_CHECKING

from firmware_protocols.jt808 import (
    Dialect,
    Header,
    Heartbeat,
    Jt808Decoder,
    Location,
    LocationBatch,
    Message,
    PackageHeld,
    Packet,
    PlatformResponse,
    Refused,
    Register,
    RegisterResponse,
    ReuploadRequest,
    TerminalResponse,
    TrainingAuthenticate,
    TrainingDownlink,
    TrainingEnvelope,
    TrainingRegisterResponse,
    TrainingUplink,
    Version,
    encode_packet,
)
from firmware_protocols.jt808.fields import to_unix
from firmware_protocols.jt808.messages import RESULT_BAD_MESSAGE, RESULT_FAILED, RESULT_NOT_SUPPORTED, RESULT_OK
from server.ingest_jt808 import EnvelopeOutcome

if TYPE_CHECKING:
    from server.gateway.service import Gateway

log = logging.getLogger(__name__)

# 0x8100 results
REGISTER_OK = 0
REGISTER_NO_VEHICLE = 2
REGISTER_NO_TERMINAL = 4

#: Framing refusals after which the connection is closed at once (a peer sending these is not a terminal).
CLOSE_AT_ONCE = frozenset({"frame_too_large", "too_many_packages", "reassembly_overflow"})
#: Ingest refusals that close the connection: the terminal is not who it says, or its signatures are not its own.
CLOSE_ON_INGEST = frozenset({"bad_signature", "terminal_mismatch", "record_no_terminal_mismatch", "terminal_revoked",
                             "unknown_terminal", "bad_key"})  # fmt: skip
#: Ingest refusals answered "not supported" rather than "failed".
NOT_SUPPORTED_INGEST = frozenset({"unsupported_training_id", "downlink_id_uplink", "unsupported_hash"})


class State(Enum):
    CONNECTED = "connected"
    REGISTERED = "registered"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


#: Message ids each state accepts without refusal (everything else before authentication is ``not_authenticated``).
ALLOWED: dict[State, frozenset[int]] = {
    State.CONNECTED: frozenset({0x0100, 0x0102}),
    State.REGISTERED: frozenset({0x0100, 0x0102}),
    State.AUTHENTICATED: frozenset({0x0001, 0x0002, 0x0100, 0x0102, 0x0200, 0x0704, 0x0900}),
    State.CLOSED: frozenset(),
}
_SLOW = frozenset({0x0100, 0x0102, 0x0900})


class TerminalConnection(asyncio.Protocol):
    """The gateway's side of one TCP connection (asyncio protocol; the codec does the bytes, sans-IO)."""

    __slots__ = (
        "_asked", "_bad", "_bucket", "_bucket_at", "_counter", "_decoder", "_preauth", "_queue", "_serial",
        "_transport", "_worker", "deadline", "gw", "last_position", "peer", "phone", "state", "terminal",
    )  # fmt: skip

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.state = State.CONNECTED
        self.peer = "?"
        self.phone: str | None = None  # the number in its headers, once it registered or authenticated
        self.terminal: str | None = None  # its national terminal number, once authenticated
        self.deadline = 0.0
        self.last_position: Location | None = None
        self._transport: asyncio.Transport | None = None
        self._decoder = Jt808Decoder(Dialect.TRAINING)
        self._queue: deque[Packet] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._serial = 0
        self._counter = 0
        self._bad = 0
        self._preauth = 0
        self._bucket = float(gateway.config.flood_burst)
        self._bucket_at = 0.0
        self._asked: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        now = self.gw.now()
        self.deadline = now + self.gw.config.auth_timeout_s
        self._bucket_at = now
        if not self.gw.admit(self):
            self.refuse("too_many_connections", "the gateway holds its maximum of connections", close=True)

    def data_received(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        now = self.gw.now()
        if self.state is State.AUTHENTICATED:
            self.deadline = now + self.gw.config.idle_timeout_s
        decoder = self._decoder
        decoder.receive_data(data, now)
        while (event := decoder.next_event()) is not None:
            if self.closed:
                return
            if not self._take_token(now):
                self.refuse("flood", f"more than {self.gw.config.flood_rate:g} frames/s", close=True)
                return
            if type(event) is Packet:
                self._on_packet(event)
            elif type(event) is Refused:
                self._on_refused(event)
            else:
                assert isinstance(event, PackageHeld)

    def eof_received(self) -> bool:
        self._decoder.receive_data(b"", self.gw.now())
        for event in self._decoder.events():
            if isinstance(event, Refused):
                self._on_refused(event)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not State.CLOSED:
            self.gw.count("connection_lost" if exc else "disconnected", persist=False)
        self.state = State.CLOSED
        self._queue.clear()
        self.gw.forget(self)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # ------------------------------------------------------------------ events
    def _take_token(self, now: float) -> bool:
        cfg = self.gw.config
        self._bucket = min(float(cfg.flood_burst), self._bucket + (now - self._bucket_at) * cfg.flood_rate)
        self._bucket_at = now
        self._bucket -= 1.0
        return self._bucket >= 0.0

    def _on_refused(self, event: Refused) -> None:
        header = event.header
        answer = None
        if header is not None and self.state is State.AUTHENTICATED:
            answer = (header, PlatformResponse(header.serial, header.msg_id, RESULT_BAD_MESSAGE))
        close_now = event.reason in CLOSE_AT_ONCE
        self._bad += 1
        self.refuse(event.reason, event.detail, close=close_now, reply=answer)
        if not close_now and self._bad > self.gw.config.max_bad_frames and not self.closed:
            self.refuse("too_many_bad_frames", f"{self._bad} refused frames", close=True)

    def _on_packet(self, packet: Packet) -> None:
        header = packet.header
        if self.phone is not None and header.terminal != self.phone:
            self.refuse("terminal_mismatch", f"header number {header.terminal} on the connection of {self.phone}",
                        close=True)  # fmt: skip
            return
        if self._worker is not None or header.msg_id in _SLOW:
            self._enqueue(packet)  # in order behind what waits for the database
            return
        self._fast(packet)

    def _fast(self, packet: Packet) -> None:
        """Messages answered at once, without the database."""
        header, message = packet.header, packet.message
        if header.msg_id not in ALLOWED[self.state]:
            if self.state is not State.AUTHENTICATED:
                self._not_authenticated(header)
                return
            self.refuse(
                "not_supported",
                f"message id 0x{header.msg_id:04x}",
                close=False,
                reply=(header, PlatformResponse(header.serial, header.msg_id, RESULT_NOT_SUPPORTED)),
            )
            return
        if type(message) is Heartbeat:
            self.reply(header, PlatformResponse(header.serial, header.msg_id, RESULT_OK))
        elif type(message) is Location:
            self.last_position = message
            self.gw.positions += 1
            self.reply(header, PlatformResponse(header.serial, header.msg_id, RESULT_OK))
        elif type(message) is LocationBatch:
            if message.locations:
                self.last_position = message.locations[-1]
            self.reply(header, PlatformResponse(header.serial, header.msg_id, RESULT_OK))
        elif type(message) is TerminalResponse:
            pass  # the terminal acknowledges one of our downlinks
        else:
            self.refuse(
                "not_supported",
                f"message id 0x{header.msg_id:04x} ({message.name})",
                close=False,
                reply=(header, PlatformResponse(header.serial, header.msg_id, RESULT_NOT_SUPPORTED)),
            )

    def _not_authenticated(self, header: Header) -> None:
        self._preauth += 1
        close = self._preauth > self.gw.config.max_preauth_messages
        self.refuse(
            "not_authenticated",
            f"0x{header.msg_id:04x} before authentication",
            close=close,
            reply=(header, PlatformResponse(header.serial, header.msg_id, RESULT_FAILED)),
        )

    def _enqueue(self, packet: Packet) -> None:
        cfg = self.gw.config
        self._queue.append(packet)
        if len(self._queue) > 4 * cfg.max_pending:
            self.refuse("flood", f"{len(self._queue)} messages waiting for the database", close=True)
            return
        if len(self._queue) > cfg.max_pending and self._transport is not None:
            self._transport.pause_reading()  # back-pressure: TCP fills up on the terminal's side
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue and not self.closed:
                packet = self._queue.popleft()
                await self._handle_slow(packet)
                if len(self._queue) <= self.gw.config.max_pending // 2 and self._transport is not None:
                    if not self.closed:
                        self._transport.resume_reading()
        except Exception:  # noqa: BLE001 - one connection's failure must not stop the gateway
            log.exception("connection %s (%s) failed", self.peer, self.terminal)
            self.refuse("internal_error", "see the log", close=True)
        finally:
            self._worker = None

    async def _handle_slow(self, packet: Packet) -> None:
        header, message = packet.header, packet.message
        if header.msg_id not in _SLOW:
            self._fast(packet)
            return
        if header.msg_id not in ALLOWED[self.state]:
            self._not_authenticated(header)
            return
        if isinstance(message, Register):
            await self._register(header, message)
        elif isinstance(message, TrainingAuthenticate):
            await self._authenticate(header, message)
        elif isinstance(message, TrainingUplink):
            await self._training(header, packet.body)
        else:  # another passthrough type, or a 2013 authentication on a training header
            self.refuse(
                "not_supported",
                f"0x{header.msg_id:04x} {message.name}",
                close=False,
                reply=(header, PlatformResponse(header.serial, header.msg_id, RESULT_NOT_SUPPORTED)),
            )

    async def _register(self, header: Header, message: Register) -> None:
        ident = await self.gw.run_db(self.gw.ingestor.identity, header.terminal)
        if ident is None:
            self.refuse(
                "unknown_terminal",
                f"0x0100 from header number {header.terminal}",
                close=True,
                reply=(header, RegisterResponse(header.serial, REGISTER_NO_TERMINAL)),
            )
        elif ident.status != "active":
            self.refuse(
                "terminal_revoked",
                f"terminal {ident.terminal} is {ident.status}",
                close=True,
                reply=(header, RegisterResponse(header.serial, REGISTER_NO_TERMINAL)),
            )
        elif message.plate != ident.car_plate:
            self.refuse(
                "plate_mismatch",
                f"terminal {ident.terminal} says car {message.plate!r}, registered {ident.car_plate!r}",
                close=True,
                reply=(header, RegisterResponse(header.serial, REGISTER_NO_VEHICLE)),
            )
        else:
            self.phone = header.terminal
            if self.state is State.CONNECTED:
                self.state = State.REGISTERED
            self.reply(header, TrainingRegisterResponse(header.serial, REGISTER_OK, self.gw.config.platform_no,
                                                        ident.school, ident.terminal))  # fmt: skip
            log.info("terminal %s (%s) registered from %s", ident.terminal, header.terminal, self.peer)

    async def _authenticate(self, header: Header, message: TrainingAuthenticate) -> None:
        ident, reason = await self.gw.run_db(self.gw.ingestor.authenticate, header.terminal,
                                             to_unix(message.timestamp), message.ciphertext)  # fmt: skip
        if reason != "ok" or ident is None:
            self.refuse(
                reason,
                f"0x0102 of header number {header.terminal}",
                close=True,
                persisted=True,
                reply=(header, PlatformResponse(header.serial, header.msg_id, RESULT_FAILED)),
            )
            return
        self.phone, self.terminal = header.terminal, ident.terminal
        self.state = State.AUTHENTICATED
        self.deadline = self.gw.now() + self.gw.config.idle_timeout_s
        self.gw.authenticated += 1
        self.reply(header, PlatformResponse(header.serial, header.msg_id, RESULT_OK))
        log.info("terminal %s (%s) authenticated from %s", ident.terminal, header.terminal, self.peer)

    async def _training(self, header: Header, body: bytes) -> None:
        assert self.terminal is not None
        outcome: EnvelopeOutcome = await self.gw.run_db(self.gw.ingestor.ingest, self.terminal, body[1:])
        # COMMIT returned (or nothing was written): only now is the terminal answered.
        if self.closed:
            return
        if outcome.ok:
            # counted before the answer goes: whoever sees the answer sees the count (a test raced this)
            self.gw.count(f"envelope_{outcome.status}", persist=False)
            if outcome.reason:
                self.gw.count(outcome.reason, persist=False)
                log.info("terminal %s: %s (answered OK, nothing stored again)", self.terminal, outcome.reason)
            self.reply(header, PlatformResponse(header.serial, header.msg_id, RESULT_OK))
            if outcome.gap is not None:
                self._ask_reupload(outcome)
            return
        reason = outcome.reason or "refused"
        result = RESULT_NOT_SUPPORTED if reason in NOT_SUPPORTED_INGEST else RESULT_FAILED
        self.refuse(
            reason,
            "training envelope refused, nothing stored",
            close=reason in CLOSE_ON_INGEST,
            persisted=True,
            reply=(header, PlatformResponse(header.serial, header.msg_id, result)),
        )

    def _ask_reupload(self, outcome: EnvelopeOutcome) -> None:
        gap = outcome.gap
        assert gap is not None and self.terminal is not None and self.phone is not None
        key = (gap.start.isoformat(), gap.end.isoformat())
        now = self.gw.now()
        if now - self._asked.get(key, -1e18) < self.gw.config.reupload_grace_s:
            return
        self._asked[key] = now
        if len(self._asked) > 64:  # bounded: forget the oldest questions
            del self._asked[next(iter(self._asked))]
        self._counter = (self._counter + 1) & 0xFFFF
        request = ReuploadRequest(1, gap.start, gap.end, gap.count)
        envelope = TrainingEnvelope.of(request, self.terminal, self._counter)
        self.send(TrainingDownlink.of(envelope))
        self.gw.count("reupload_requested", persist=False)
        log.info("terminal %s: %d minute records missing between %s and %s: 0x8205 sent", self.terminal, gap.count,
                 gap.start, gap.end)  # fmt: skip

    # ------------------------------------------------------------------ output
    def reply(self, header: Header, message: Message) -> None:
        self.send(message, header.terminal)

    def send(self, message: Message, phone: str | None = None) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._serial = (self._serial + 1) & 0xFFFF
        number = phone or self.phone or "0"
        transport.write(encode_packet(Header(message.msg_id, number, self._serial, Version.TRAINING), message))
        if transport.get_write_buffer_size() > self.gw.config.max_write_buffer:
            self.refuse("slow_reader", "the terminal does not read our replies", close=True)

    def refuse(self, reason: str, detail: str, *, close: bool, persisted: bool = False,
               reply: tuple[Header, Message] | None = None) -> None:  # fmt: skip
        """Count and log a refusal, send ``reply``, then close the connection when the protocol says so."""
        self.gw.count(reason, persist=not persisted)
        level = logging.WARNING if close or self._bad <= 3 else logging.DEBUG
        log.log(level, "refused %s from %s (terminal %s): %s%s", reason, self.peer, self.terminal or self.phone,
                detail, "; connection closed" if close else "")  # fmt: skip
        if reply is not None:
            self.reply(*reply)
        if close:
            self.close()

    def expire(self) -> None:
        """Called by the sweeper when :attr:`deadline` passed."""
        held = self._decoder._deframer.buffered  # noqa: SLF001 - a half frame is part of the reason
        half = f"; {held} bytes of a half frame held" if held else ""
        if self.state is State.AUTHENTICATED:
            self.refuse("idle_timeout", f"no frame for {self.gw.config.idle_timeout_s:g} s{half}", close=True)
        else:
            self.refuse("auth_timeout", f"not authenticated within {self.gw.config.auth_timeout_s:g} s{half}",
                        close=True)  # fmt: skip

    def close(self) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()  # what was written is flushed first
        self.gw.forget(self)
