"""A national-protocol timing terminal (2016 training extension of JT/T 808), simulated over a real TCP socket.

It does what a certified terminal in a training car does: registers (0x0100), authenticates (0x0102, the timestamp
signed with its RSA-2048 key), sends heartbeats and positions, and runs a training session: coach login, student
login, a signed 0x0203 minute record every minute, photos (0x0305 init + 0x0306 data, sub-packaged), student and
coach logout. Every training message rides in a type-0x13 envelope signed with its key. When the link is down, the
messages wait in its store and go out later with the backfill bit set; a 0x8205 from the platform makes it send the
minutes asked for again (report type 2). ``drop()`` cuts the connection as a lost mobile link does.

Uses the codec only (``firmware_protocols.jt808``): never the gateway or server. ``jiapei sim national`` runs one.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from firmware_protocols.identifiers import BEIJING, beijing_day
from firmware_protocols.jt808 import (
    CoachLogin,
    CoachLogout,
    Dialect,
    Header,
    Heartbeat,
    Jt808Decoder,
    Location,
    Message,
    MinuteRecord,
    Packet,
    PhotoData,
    PhotoInit,
    PlatformResponse,
    Register,
    ReuploadReply,
    ReuploadRequest,
    StudentLogin,
    StudentLogout,
    TrainingAuthenticate,
    TrainingDownlink,
    TrainingEnvelope,
    TrainingMessage,
    TrainingRegisterResponse,
    TrainingUplink,
    Version,
    encode_packets,
)
from firmware_protocols.jt808.signing import sign_envelope, sign_timestamp
from firmware_protocols.jt808.training import (
    PHOTO_COACH_LOGIN,
    PHOTO_COACH_LOGOUT,
    PHOTO_DURING_TRAINING,
    PHOTO_STUDENT_LOGIN,
    PHOTO_STUDENT_LOGOUT,
)
from firmware_protocols.jt808.training_platform import BACKFILL, HASH_SHA256

log = logging.getLogger(__name__)

#: Seconds to wait for the platform's answer before the link counts as lost.
REPLY_TIMEOUT_S = 10.0
#: Largest body per package (the protocol's 10-bit length; real terminals use ~1 KiB packages).
PACKAGE_BODY = 1023
#: Minutes of one leg along the training ground's straight before the car turns back to its start.
LEG_MINUTES = 10
#: Photo bytes the simulator makes (a few packages each).
PHOTO_SIZE = 3000
#: Minutes between photos during training (the common audit rule is a photo every 15 minutes).
PHOTO_INTERVAL_MIN = 15
#: Messages kept while offline (a terminal's store is bounded; ours: a long day of minutes).
MAX_STORED = 2000


class LinkDown(Exception):
    """The TCP link to the platform is gone (the message waits in the store)."""


@dataclass
class Stored:
    message: TrainingMessage
    backfill: bool = False


@dataclass
class NationalTerminal:
    """One simulated terminal. Times of training messages are the caller's (simulated); the 0x0102 timestamp is
    the wall clock, as the platform checks it against its own."""

    terminal: str  # 16-character national number
    phone: str  # the number in the frame headers: 16 digits
    key: RSAPrivateKey
    plate: str
    host: str = "127.0.0.1"
    port: int = 6808
    wall_clock: Callable[[], float] = time.time
    reply_timeout: float = REPLY_TIMEOUT_S
    lat: float = 35.416
    lon: float = 119.527
    sock: socket.socket | None = None
    store: list[Stored] = field(default_factory=list)
    sent_minutes: dict[str, MinuteRecord] = field(default_factory=dict)
    results: list[tuple[int, int]] = field(default_factory=list)  # (envelope msg id, 0x8001 result) per answer
    lose_minutes: set[int] = field(default_factory=set)  # daily sequences "lost" on first send (the 0x8205 test)
    _decoder: Jt808Decoder = field(default_factory=lambda: Jt808Decoder(Dialect.TRAINING))
    _serial: int = 0
    _counter: int = 0
    _daily: dict[str, int] = field(default_factory=dict)
    _photo: int = 0
    _class_id: int = 0
    _downlinks: list[Packet] = field(default_factory=list)
    _last_auth: int = 0
    _leg: int = 0  # minutes driven along the ground's 400 m straight (then back to its start)

    # ------------------------------------------------------------------ link
    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.reply_timeout)
        self._decoder = Jt808Decoder(Dialect.TRAINING)

    def drop(self) -> None:
        """The link is lost (no goodbye): the socket is closed under the terminal's feet."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    close = drop

    def _send(self, message: Message, msg_id: int | None = None) -> int:
        if self.sock is None:
            raise LinkDown("not connected")
        self._serial = (self._serial + 1) & 0xFFFF
        first = self._serial
        header = Header(msg_id or message.msg_id, self.phone, first, Version.TRAINING)
        frames = encode_packets(header, message, PACKAGE_BODY)
        self._serial = (first + len(frames) - 1) & 0xFFFF
        try:
            self.sock.sendall(b"".join(frames))
        except OSError as exc:
            self.drop()
            raise LinkDown(str(exc)) from exc
        return first

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are (for fault tests: junk, half frames, floods)."""
        if self.sock is None:
            raise LinkDown("not connected")
        self.sock.sendall(data)

    def next_serial(self) -> int:
        return (self._serial + 1) & 0xFFFF

    def _wait(self, serial: int, reply_id: int) -> Message:
        """Read until the answer to ``serial`` comes; downlinks seen meanwhile are kept for later."""
        deadline = time.monotonic() + self.reply_timeout
        while True:
            while (event := self._decoder.next_event()) is not None:  # what follows the answer stays queued
                if not isinstance(event, Packet):
                    continue
                m = event.message
                if isinstance(m, TrainingRegisterResponse) and reply_id == 0x8100 and m.reply_serial == serial:
                    return m
                if isinstance(m, PlatformResponse) and m.reply_serial == serial and reply_id == 0x8001:
                    return m
                if isinstance(m, TrainingDownlink):
                    self._downlinks.append(event)
            if self.sock is None:
                raise LinkDown("not connected")
            left = deadline - time.monotonic()
            if left <= 0:
                self.drop()
                raise LinkDown(f"no answer to serial {serial} within {self.reply_timeout} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                self.drop()
                raise LinkDown(str(exc)) from exc
            if not data:
                self.drop()
                raise LinkDown("the platform closed the connection")
            self._decoder.receive_data(data)

    def request(self, message: Message) -> Message:
        serial = self._send(message)
        return self._wait(serial, 0x8100 if message.msg_id == 0x0100 else 0x8001)

    # ------------------------------------------------------------------ standard messages
    def register(self) -> int:
        """0x0100; returns the 0x8100 result (0: registered)."""
        body = Register(37, 1100, "JIAPE", "NT-SIM-2016", self.terminal[-7:], 2, self.plate, "860000000000001",
                        "training")  # fmt: skip
        answer = self.request(body)
        assert isinstance(answer, TrainingRegisterResponse)
        return answer.result

    def authenticate(self, timestamp: int | None = None, key: RSAPrivateKey | None = None) -> int:
        """0x0102 with the timestamp signed by the terminal's key; returns the 0x8001 result (0: accepted)."""
        if timestamp is None:
            while int(self.wall_clock()) <= self._last_auth:  # the platform refuses a timestamp used before
                time.sleep(0.05)
            stamp = int(self.wall_clock())
            self._last_auth = stamp
        else:
            stamp = timestamp
        cipher = sign_timestamp(stamp, key or self.key)
        answer = self.request(TrainingAuthenticate(datetime.fromtimestamp(stamp, UTC), cipher))
        assert isinstance(answer, PlatformResponse)
        return answer.result

    def start(self) -> None:
        """Connect, register, authenticate (raises ``LinkDown`` or ``RuntimeError`` when refused)."""
        self.connect()
        if (r := self.register()) != 0:
            raise RuntimeError(f"register refused with result {r}")
        if (r := self.authenticate()) != 0:
            raise RuntimeError(f"authentication refused with result {r}")

    def heartbeat(self) -> int:
        answer = self.request(Heartbeat())
        assert isinstance(answer, PlatformResponse)
        self.serve_downlinks()  # a downlink sent before the answer has been read by now
        return answer.result

    def gnss(self, at: datetime, speed: float = 25.0, rpm: int | None = 1800, mileage: float = 1000.0) -> Location:
        extras: list[tuple[int, bytes]] = [(0x01, round(mileage * 10).to_bytes(4, "big"))]
        if rpm is not None:
            extras.append((0x05, rpm.to_bytes(2, "big")))
        return Location(0, 0x3, self.lat, self.lon, speed, 90, at, None, speed, tuple(extras))

    def position(self, at: datetime, speed: float = 25.0) -> int:
        loc = Location(0, 0x3, self.lat, self.lon, speed, 90, at, 12, None, ((0x01, (10000).to_bytes(4, "big")),))
        answer = self.request(loc)
        assert isinstance(answer, PlatformResponse)
        return answer.result

    # ------------------------------------------------------------------ training messages
    def envelope(self, message: TrainingMessage, backfill: bool = False) -> TrainingEnvelope:
        self._counter = (self._counter + 1) & 0xFFFF
        attributes = (HASH_SHA256 << 4) | (BACKFILL if backfill else 0)
        return sign_envelope(TrainingEnvelope.of(message, self.terminal, self._counter, attributes), self.key)

    def send_envelope(self, env: TrainingEnvelope) -> int:
        """Send a signed envelope; the 0x8001 result."""
        answer = self.request(TrainingUplink.of(env))
        assert isinstance(answer, PlatformResponse)
        self.results.append((env.msg_id, answer.result))
        return answer.result

    def training(self, message: TrainingMessage) -> int | None:
        """Send now (the 0x8001 result), or keep it for backfill when the link is down (None)."""
        if self.sock is None:
            self._keep(message)
            return None
        try:
            result = self.send_envelope(self.envelope(message))
        except LinkDown:
            self._keep(message)
            return None
        self.serve_downlinks()
        return result

    def _keep(self, message: TrainingMessage) -> None:
        if len(self.store) >= MAX_STORED:
            raise RuntimeError("the terminal's store is full")
        self.store.append(Stored(message, backfill=True))

    def backfill(self) -> int:
        """Send what waited while offline, oldest first, with the backfill bit; returns how many went out."""
        sent = 0
        while self.store and self.sock is not None:
            item = self.store[0]
            try:
                self.send_envelope(self.envelope(item.message, backfill=item.backfill))
            except LinkDown:
                break
            self.store.pop(0)
            sent += 1
        self.serve_downlinks()
        return sent

    def reconnect(self) -> int:
        """After a lost link: connect, authenticate again (no new registration), send the backfill."""
        self.connect()
        if (r := self.authenticate()) != 0:
            raise RuntimeError(f"authentication refused with result {r}")
        return self.backfill()

    def serve_downlinks(self) -> None:
        """Answer the platform's training downlinks seen so far (0x8205: send the minutes asked for again)."""
        while self._downlinks and self.sock is not None:
            packet = self._downlinks.pop(0)
            m = packet.message
            assert isinstance(m, TrainingDownlink)
            if isinstance(m.message, ReuploadRequest):
                req = m.message
                wanted = [
                    r
                    for r in self.sent_minutes.values()
                    if req.start is not None and req.end is not None and req.start <= r.start <= req.end
                ]
                log.info("0x8205 from the platform: %d minute records asked for again", len(wanted))
                self.send_envelope(self.envelope(ReuploadReply(1 if wanted else 3)))
                for record in sorted(wanted, key=lambda r: r.record_no):
                    self.send_envelope(self.envelope(dataclasses.replace(record, report_type=2)))

    # ------------------------------------------------------------------ a training session
    def record_no(self, at: datetime) -> str:
        day = f"{beijing_day(at):%y%m%d}"
        self._daily[day] = self._daily.get(day, 0) + 1
        return f"{self.terminal}{day}{self._daily[day]:04d}"

    def coach_login(self, coach: str, at: datetime, id_card: str = "371102198001010011") -> int | None:
        self.photo(coach, PHOTO_COACH_LOGIN, at, 0)
        return self.training(CoachLogin(coach, id_card, "C1", self.gnss(at)))

    def coach_logout(self, coach: str, at: datetime) -> int | None:
        self.photo(coach, PHOTO_COACH_LOGOUT, at, 0)
        return self.training(CoachLogout(coach, self.gnss(at)))

    def student_login(self, student: str, coach: str, course: str, at: datetime) -> int | None:
        self._class_id += 1
        result = self.training(StudentLogin(student, coach, course, self._class_id, self.gnss(at)))
        self.photo(student, PHOTO_STUDENT_LOGIN, at, self._class_id)
        return result

    def student_logout(self, student: str, at: datetime, minutes: int, distance_km: float) -> int | None:
        self.photo(student, PHOTO_STUDENT_LOGOUT, at, self._class_id)
        return self.training(StudentLogout(student, at, minutes, distance_km, self._class_id, self.gnss(at)))

    def minute(self, student: str, coach: str, course: str, start: datetime, *, speed: float = 36.0,
               distance_km: float = 0.5, rpm: int | None = 1800) -> int | None:  # fmt: skip
        """One 0x0203 (its GNSS block taken at second 30)."""
        record = MinuteRecord(self.record_no(start), 1, student, coach, self._class_id,
                              start.astimezone(BEIJING).time().replace(tzinfo=None), course, 1, speed,
                              distance_km, self.gnss(start + timedelta(seconds=30), speed, rpm))  # fmt: skip
        self.sent_minutes[record.record_no] = record
        self.drive_one_minute()
        if int(record.record_no[-4:]) in self.lose_minutes:
            self.lose_minutes.discard(int(record.record_no[-4:]))
            return None  # lost on the way: only a 0x8205 brings it back
        return self.training(record)

    def drive_one_minute(self) -> None:
        """Up and down the training ground's straight (~44 m a minute, 400 m long): the car stays inside the ground
        however long it trains (driving on north forever, it left every teaching area after ~40 minutes)."""
        self._leg = (self._leg + 1) % LEG_MINUTES
        self.lat = round(self.lat + (0.0004 if self._leg else -0.0004 * (LEG_MINUTES - 1)), 6)

    def photo(self, person: str, event: int, at: datetime, class_id: int, confidence: int = 92) -> int | None:
        """0x0305 init then 0x0306 data (sub-packaged); the result of the data message."""
        self._photo += 1
        number = f"{self._photo:010d}"
        data = b"\xff\xd8" + os.urandom(PHOTO_SIZE) + b"\xff\xd9"
        packages = -(-len(data) // PACKAGE_BODY)
        face = confidence if event != PHOTO_COACH_LOGOUT else 0
        self.training(PhotoInit(number, person, 1, 1, 1, event, packages, len(data), class_id, self.gnss(at), face))
        return self.training(PhotoData(number, data))

    def session(self, coach: str, student: str, course: str, start: datetime, minutes: int, *,
                pace: Callable[[], None] | None = None, drop_at: int | None = None,
                back_at: int | None = None) -> datetime:  # fmt: skip
        """A whole session from ``start``: logins, ``minutes`` minutes with a photo every 15, logouts.
        ``drop_at`` / ``back_at``: the link is lost before that minute and comes back before that one."""
        self.coach_login(coach, start)
        self.student_login(student, coach, course, start)
        t = start
        for i in range(minutes):
            if pace is not None:
                pace()
            if drop_at is not None and i == drop_at:
                self.drop()
            if back_at is not None and i == back_at:
                self.reconnect()
            t = start + timedelta(minutes=i)
            self.minute(student, coach, course, t)
            if i and i % PHOTO_INTERVAL_MIN == 0:
                self.photo(student, PHOTO_DURING_TRAINING, t + timedelta(seconds=40), self._class_id)
        end = start + timedelta(minutes=minutes)
        self.student_logout(student, end, minutes, 0.5 * minutes)
        self.coach_logout(coach, end)
        return end


def load_key(path: Path) -> RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise SystemExit(f"{path}: not an RSA private key")
    return key


def main(argv: Sequence[str] | None = None) -> int:
    """``jiapei sim national``: one simulated national terminal training sessions against a gateway."""
    p = argparse.ArgumentParser(prog="jiapei sim national", description=main.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6808)
    p.add_argument("--terminal", required=True, help="16-character national terminal number")
    p.add_argument("--phone", help="header number (default: the terminal number)")
    p.add_argument("--key", type=Path, required=True, help="the terminal's RSA-2048 private key (PEM)")
    p.add_argument("--plate", required=True)
    p.add_argument("--coach", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--course", default="1212120000")
    p.add_argument("--minutes", type=int, default=22, help="minutes per session")
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--factor", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--start", help="simulated start (ISO 8601; default: now)")
    p.add_argument("--drop-every", type=int, default=3, help="lose the link in every Nth session (0: never)")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    t = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    t = t.replace(second=0, microsecond=0)
    sim = NationalTerminal(args.terminal, args.phone or args.terminal, load_key(args.key), args.plate,
                           args.host, args.port)  # fmt: skip

    def pace() -> None:
        time.sleep(60 / args.factor)

    for attempt in range(30):
        try:
            sim.start()
            break
        except (LinkDown, OSError) as exc:
            log.info("gateway not reachable yet (%s); retrying", exc)
            time.sleep(min(2.0, 0.2 * (attempt + 1)))
    else:
        return 1
    try:
        for n in range(args.sessions):
            lossy = args.drop_every and n % args.drop_every == args.drop_every - 1
            t = sim.session(args.coach, args.student, args.course, t, args.minutes, pace=pace,
                            drop_at=5 if lossy else None, back_at=8 if lossy else None)  # fmt: skip
            log.info("session %d done; %d answers, %d stored offline", n + 1, len(sim.results), len(sim.store))
            for _ in range(2):
                pace()
                sim.heartbeat()
            t += timedelta(minutes=2)
    except KeyboardInterrupt:
        pass
    finally:
        sim.drop()
    return 0
