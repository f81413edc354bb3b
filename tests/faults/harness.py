"""What the fault tests share: an in-process server stack, record-store filling, a faulty TCP link, the results table.

Real parts only: Mosquitto with the project's TLS config, the agent's RecordStore and RecordSync, the server's
Ingestor, Ledger and IngestConsumer on a migrated SQLite database, the invariant checker at the end of every test.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.session import EmitRecord
from agent.store import RecordStore
from firmware_protocols.records import RecordKind
from server.clock import Clock, utcnow
from server.ingest import Ingestor
from server.ledger import Ledger
from server.mqtt_consumer import IngestConsumer
from server.policy import load_builtin_policy
from tools.invariants import Report, check

log = logging.getLogger(__name__)

SCHOOL_COACH = "C000000000000001"
STUDENT = "P000000000000001"
COURSE_C1_PART2 = "1212130000"
#: 10:00 Beijing time.
T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
#: Sessions are cut at this many minutes (as a training session of a few hours is): the ledger re-judges a whole
#: session after each batch, so one endless session would measure the ledger, not the fault.
SESSION_MINUTES = 60


@dataclass
class FaultResult:
    fault: str
    iterations: int
    records: int
    missing: int
    duplicated: int
    double_counted: int
    seconds: float
    note: str = ""


#: Filled by :func:`finish`, printed by ``pytest_terminal_summary`` in this folder's conftest.
RESULTS: list[FaultResult] = []


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)  # polling other threads' or processes' databases: there is no event to wait on
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finish(fault: str, iterations: int, stores: Iterable[Path], sf: Any, started: float, note: str = "") -> Report:
    """Run the invariant checker over both ends, record the row of the results table, assert all zero."""
    report = check(list(stores), sf.url)
    RESULTS.append(FaultResult(fault, iterations, report.total("produced"), report.missing, report.duplicated,
                               report.double_counted, time.monotonic() - started, note))  # fmt: skip
    log.info("%s: %s", fault, report.summary())
    report.assert_clean()
    assert report.total("produced") == report.total("stored")
    return report


# --------------------------------------------------------------------------------------------------------- server


class ServerStack:
    """The server's ingest side in this process: Ingestor + Ledger (demo policy) + IngestConsumer over TLS."""

    def __init__(self, sf: Any, port: int, pki: Any, *, clock: Clock = utcnow, grace_s: float = 2.0,
                 client_id: str = "jiapei-server-1") -> None:  # fmt: skip
        self.ledger = Ledger(sf, load_builtin_policy("demo"), clock)
        self.ingestor = Ingestor(sf, clock, resend_grace=timedelta(seconds=grace_s),
                                 after_commit=self.ledger.after_ingest)  # fmt: skip
        self.consumer = IngestConsumer(self.ingestor, sf, "127.0.0.1", port, client_id=client_id, clock=clock,
                                       resend_check_seconds=0.5, tls=pki.context())  # fmt: skip

    def start(self) -> ServerStack:
        self.consumer.start()
        return self

    def stop(self) -> None:
        self.consumer.stop()


# --------------------------------------------------------------------------------------------------------- records


def session_id(terminal: str, chain: int, seq: int) -> str:
    return f"{terminal}-{chain}-{seq}"


def login_body(session: str) -> dict[str, Any]:
    return {"student": STUDENT, "coach": SCHOOL_COACH, "course": COURSE_C1_PART2, "session": session,
            "face": {"result": "pass", "distance": 300}}  # fmt: skip


def minute_body(session: str, speed: int = 250) -> dict[str, Any]:
    return {"student": STUDENT, "coach": SCHOOL_COACH, "course": COURSE_C1_PART2, "session": session,
            "max_speed": speed, "distance_m": 400, "fix_count": 60, "vehicle": {"rpm": 1800, "speed": speed,
                                                                                "ignition": True},
            "fix30": {"lat": 35420000, "lon": 119520000, "mode": 3, "sats": 9, "hdop": 9, "speed": speed},
            "face": {"result": "pass", "seq": None}}  # fmt: skip


def logout_body(session: str, minutes: int) -> dict[str, Any]:
    return {"student": STUDENT, "coach": SCHOOL_COACH, "session": session, "minutes": minutes,
            "face": {"result": "pass", "distance": 310}}  # the sign-out photo: the session's last (validation)


def append_session(store: RecordStore, start: datetime, minutes: int) -> int:
    """Login at ``start``, ``minutes`` minute records one minute apart, logout: as the session machine emits them."""
    chain, seq = store.next_position()
    sid = session_id(store.terminal, chain, seq)
    store.append(EmitRecord(RecordKind.STUDENT_LOGIN, start, login_body(sid)))
    for i in range(minutes):
        store.append(EmitRecord(RecordKind.MINUTE, start + timedelta(minutes=i), minute_body(sid),
                                needs_record_no=True))  # fmt: skip
    store.append(EmitRecord(RecordKind.STUDENT_LOGOUT, start + timedelta(minutes=minutes), logout_body(sid, minutes)))
    return minutes + 2


def fill(store: RecordStore, sessions: Iterable[tuple[datetime, int]]) -> int:
    """Append whole sessions fast: ``synchronous=OFF`` while filling (a test's backlog, not a durability claim),
    ``FULL`` again afterwards. Returns the records appended."""
    store.ensure_genesis(T0)
    store.db.execute("PRAGMA synchronous=OFF")
    try:
        return sum(append_session(store, start, n) for start, n in sessions)
    finally:
        store.db.execute("PRAGMA synchronous=FULL")


def backlog(start: datetime, minutes: int, per_session: int = SESSION_MINUTES) -> list[tuple[datetime, int]]:
    """Back-to-back sessions of ``per_session`` minutes covering ``minutes`` minutes from ``start``."""
    out, t, left = [], start, minutes
    while left > 0:
        n = min(per_session, left)
        out.append((t, n))
        t += timedelta(minutes=n + 1)
        left -= n
    return out


# --------------------------------------------------------------------------------------------------------- link


class LinkProxy:
    """A TCP proxy with faults, between the agent and the broker (no ``tc netem`` on this machine).

    Each chunk is delayed by ``delay_s`` ± ``jitter_s``; bandwidth is capped at ``bytes_per_s``; with probability
    ``cut_p`` per chunk the connection is cut (both sides closed: what a dead zone does to a TCP connection, the
    stream equivalent of lost packets); ``stall()`` stops forwarding for a while without closing anything.
    """

    def __init__(self, upstream_port: int, *, delay_s: float = 0.0, jitter_s: float = 0.0,
                 bytes_per_s: float | None = None, cut_p: float = 0.0, seed: int = 0) -> None:  # fmt: skip
        self.upstream_port = upstream_port
        self.delay_s, self.jitter_s, self.bytes_per_s, self.cut_p = delay_s, jitter_s, bytes_per_s, cut_p
        self.rng = random.Random(seed)  # noqa: S311 - fault schedule, not a secret
        self.cuts = 0
        self.connections = 0
        self.bytes = 0
        self._stall_until = 0.0
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="link-proxy", daemon=True)
        self._thread.start()

    def stall(self, seconds: float) -> None:
        self._stall_until = time.monotonic() + seconds

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            self.connections += 1
            dead = threading.Event()
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, dead), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, dead: threading.Event) -> None:
        try:
            while not self._stop.is_set() and not dead.is_set():
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                data = src.recv(16384)
                if not data:
                    break
                if self.cut_p and self.rng.random() < self.cut_p:
                    self.cuts += 1
                    break
                pause = max(0.0, self._stall_until - time.monotonic())
                pause += max(0.0, self.delay_s + self.rng.uniform(-self.jitter_s, self.jitter_s))
                if self.bytes_per_s:
                    pause += len(data) / self.bytes_per_s
                if pause:
                    time.sleep(pause)  # the link's latency and bandwidth: this is the fault being injected
                dst.sendall(data)
                self.bytes += len(data)
        except OSError:
            pass
        finally:
            dead.set()
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
