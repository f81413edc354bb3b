"""The gateway service: an asyncio TCP server holding many national terminals, with one database thread.

Each connection is a :class:`~server.gateway.connection.TerminalConnection`; what needs the database (register,
authenticate, training envelopes) runs on ONE worker thread, in order, so SQLite sees one writer and a terminal's
messages are answered in the order they came. A sweeper closes connections whose deadline passed and adds the
gateway's refusal counters to the server's (``rejections``, shown by ``/metrics``) every ``counters_flush_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from server.gateway.connection import State, TerminalConnection
from server.ingest_jt808 import NationalIngestor

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Counter names that are not refusals (kept in memory for the operator, not added to ``rejections``).
INFORMATIONAL = frozenset({"disconnected", "connection_lost", "reupload_requested"})


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Limits and deadlines (seconds); each has its reason beside it."""

    #: From the TCP connection to a successful 0x0102 (a terminal registers and authenticates in a few seconds).
    auth_timeout_s: float = 60.0
    #: Between two frames of an authenticated terminal (heartbeat every 30 s: six missed ones).
    idle_timeout_s: float = 180.0
    #: Refused frames per connection before it is closed (one noisy frame is a line; many are not a terminal).
    max_bad_frames: int = 20
    #: Frames per second a terminal may keep up (a photo's packages come in bursts: ``flood_burst``).
    flood_rate: float = 100.0
    flood_burst: int = 1000
    #: Messages waiting for the database per connection before reading pauses (TCP back-pressure).
    max_pending: int = 32
    #: Reply bytes a terminal may leave unread.
    max_write_buffer: int = 256 * 1024
    #: Messages refused before authentication before the connection is closed.
    max_preauth_messages: int = 3
    #: Connections held at once (file descriptors and memory).
    max_connections: int = 20_000
    #: The same gap is asked for again (0x8205) after this long.
    reupload_grace_s: float = 60.0
    #: How often deadlines are checked.
    sweep_s: float = 1.0
    #: How often the refusal counters are added to the database's.
    counters_flush_s: float = 10.0
    #: This platform's number in the 0x8100 answer (5 characters).
    platform_no: str = "JP001"


class Gateway:
    """Listens, holds connections, runs their database work on one thread, and counts every refusal."""

    def __init__(self, ingestor: NationalIngestor, config: GatewayConfig | None = None) -> None:
        self.ingestor = ingestor
        self.config = config or GatewayConfig()
        self.counters: Counter[str] = Counter()
        self._unflushed: Counter[str] = Counter()
        self.connections: set[TerminalConnection] = set()
        self.authenticated = 0
        self.positions = 0
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.changed = threading.Condition()  # notified on every count (tests wait on it)
        self.port = 0

    # ------------------------------------------------------------------ life
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(lambda: TerminalConnection(self), host, port, backlog=4096)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._tasks = [self._loop.create_task(self._sweep())]
        log.info("gateway listening on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.get_running_loop().run_in_executor(self._db, self._flush_now)
        self._db.shutdown(wait=True)
        log.info("gateway stopped; counters %s", dict(self.counters))

    async def serve_until(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.stop()

    # ------------------------------------------------------------------ for connections
    def now(self) -> float:
        return time.monotonic()

    def admit(self, conn: TerminalConnection) -> bool:
        if len(self.connections) >= self.config.max_connections:
            return False
        self.connections.add(conn)
        return True

    def forget(self, conn: TerminalConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            if conn.terminal is not None:
                self.authenticated -= 1

    def count(self, reason: str, *, persist: bool = True) -> None:
        self.counters[reason] += 1
        if persist and reason not in INFORMATIONAL:
            self._unflushed[f"gateway_{reason}"] += 1
        with self.changed:
            self.changed.notify_all()

    def run_db(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = self._loop or asyncio.get_running_loop()
        return loop.run_in_executor(self._db, fn, *args)

    # ------------------------------------------------------------------ background
    async def _sweep(self) -> None:
        last_flush = self.now()
        while True:
            await asyncio.sleep(self.config.sweep_s)
            now = self.now()
            for conn in [c for c in self.connections if c.deadline < now and c.state is not State.CLOSED]:
                conn.expire()
            if now - last_flush >= self.config.counters_flush_s and self._unflushed:
                last_flush = now
                try:
                    await self.run_db(self._flush_now)
                except Exception:  # noqa: BLE001 - counters are kept and flushed next time
                    log.exception("flushing gateway counters failed")

    def _flush_now(self) -> None:
        counts, self._unflushed = self._unflushed, Counter()
        if counts:
            try:
                self.ingestor.bump(counts)
            except Exception:
                self._unflushed.update(counts)
                raise

    # ------------------------------------------------------------------ for tests and operators
    def stats(self) -> dict[str, Any]:
        return {"connections": len(self.connections), "authenticated": self.authenticated,
                "positions": self.positions, "counters": dict(self.counters)}  # fmt: skip

    def wait_for(self, predicate: Callable[[Counter[str]], bool], timeout: float = 10.0) -> bool:
        """Block (another thread) until ``predicate(counters)`` holds; False on timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.counters), timeout)
