"""Shared fixtures: free ports, a real Mosquitto, a signing test terminal, a migrated server database.

Reusable by every suite: ``free_port``, ``mosquitto`` (a started broker: ``.host``, ``.port``), ``TestTerminal``
(an Ed25519 key that signs a genesis and records with a correct chain), ``server_db`` (a migrated SQLite file) and
``enrolled`` (a school, a registered terminal, a coach and a student in that database).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from firmware_protocols import envelope
from firmware_protocols.identifiers import beijing_day
from firmware_protocols.messages import LostNotice, RecordBatch
from firmware_protocols.records import GENESIS_PREV, RecordKind, build_payload, record_hash, sign_record
from server.db import make_engine

MOSQUITTO = "/usr/sbin/mosquitto"
SCHOOL = "S000000000000001"
TERMINAL = "T000000000000001"
COACH = "C000000000000001"
STUDENT = "P000000000000001"
COURSE_C1_PART2 = "1212130000"  # practical, C1, part 2, item 13
#: 10:00 Beijing time: inside the practical training window.
T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def free_port_number() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> int:
    return free_port_number()


class TestPki:
    """A throwaway CA for one test (``jiapei pki init`` in ``directory``) that issues client certificates on demand."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        from server.broker import init_pki
        from server.pki import CertificateAuthority

        self.dir = directory
        if (directory / "ca.key").exists():
            self.ca = CertificateAuthority.load(directory)
        else:
            self.ca = init_pki(directory, directory, ["127.0.0.1", "localhost"])

    def tls(self, identity: str, **issue: Any) -> dict[str, str]:
        """Files of a client certificate for ``identity`` (CN): ``{"ca", "cert", "key"}`` as RecordSync takes them."""
        from server.pki import key_pem, new_tls_key, write_private, write_public

        stem = self.dir / "clients" / f"{identity}-{uuid.uuid4().hex[:6]}"
        key = new_tls_key()
        issued = self.ca.issue_client(identity, key.public_key(), **issue)
        write_private(stem.with_suffix(".key"), key_pem(key))
        write_public(stem.with_suffix(".crt"), issued.pem)
        self.last_serial = issued.serial
        cert, key_file = stem.with_suffix(".crt"), stem.with_suffix(".key")
        return {"ca": str(self.ca.cert_file), "cert": str(cert), "key": str(key_file)}

    def context(self, identity: str = "jiapei-server-1") -> ssl.SSLContext:
        from server.broker import tls_context

        files = self.tls(identity)
        return tls_context(files["ca"], files["cert"], files["key"])


def pki_at(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@dataclass
class Broker:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    pki: TestPki

    def tls(self, identity: str, **issue: Any) -> dict[str, str]:
        return self.pki.tls(identity, **issue)

    def context(self, identity: str = "jiapei-server-1") -> ssl.SSLContext:
        return self.pki.context(identity)

    @property
    def pid_file(self) -> Path:
        return self.pki.dir / f"mosquitto-{self.port}.pid"


def _wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)  # polling a port, not waiting on work
    raise TimeoutError(f"mosquitto did not listen on {host}:{port} within {timeout}s")


def start_mosquitto(tmp_path: Path, port: int | None = None, *, persistence: bool = False) -> Broker:
    """A real Mosquitto with the project's TLS config (server.broker): client certificates from a throwaway CA
    (``tmp_path/pki``, kept across restarts in one test), identity from the certificate, the per-terminal ACL."""
    from server.broker import render_mosquitto_conf

    if not Path(MOSQUITTO).exists() and shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    port = port or free_port_number()
    pki = pki_at(tmp_path)
    conf = tmp_path / f"mosquitto-{port}.conf"
    log = tmp_path / f"mosquitto-{port}.log"
    text = render_mosquitto_conf(port=port, bind="127.0.0.1", pki_dir=pki.dir, broker_dir=pki.dir,
                                 persistence=persistence, run_as_root=os.geteuid() == 0)  # fmt: skip
    conf.write_text(text.replace(f"pid_file {pki.dir / 'mosquitto.pid'}", f"pid_file {pki.dir}/mosquitto-{port}.pid"))
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    _wait_for_port("127.0.0.1", port, 10.0, proc)
    return Broker("127.0.0.1", port, proc, log, pki)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    broker = start_mosquitto(tmp_path)
    yield broker
    broker.process.terminate()
    try:
        broker.process.wait(5)
    except subprocess.TimeoutExpired:
        broker.process.kill()


@dataclass
class TestTerminal:
    """A terminal's signing side: keeps chain, seq and prev, and signs records as the agent does."""

    __test__ = False  # not a test class for pytest

    id: str = TERMINAL
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    chain: int = 1
    seq: int = 0
    prev: str = GENESIS_PREV
    daily_seq: int = 0
    batches: int = 0

    @property
    def public_pem(self) -> str:
        return envelope.public_key_to_pem(self.key.public_key())

    @property
    def key_id(self) -> str:
        return envelope.key_id(self.key.public_key())

    def record(self, kind: RecordKind, body: dict[str, Any], at: datetime) -> bytes:
        raw = sign_record(build_payload(kind, self.id, self.chain, self.seq, self.prev, at, body), self.key)
        self.seq += 1
        self.prev = record_hash(raw)
        return raw

    def genesis(self, at: datetime = T0, reason: str = "first_start", previous_chain: int | None = None) -> bytes:
        body = {"public_key": self.public_pem, "reason": reason, "previous_chain": previous_chain}
        return self.record(RecordKind.GENESIS, body, at)

    def new_chain(self) -> None:
        self.chain += 1
        self.seq = 0
        self.prev = GENESIS_PREV

    def login(
        self,
        at: datetime,
        session: str = "S1",
        student: str = STUDENT,
        coach: str = COACH,
        course: str = COURSE_C1_PART2,
    ) -> bytes:
        body = {
            "student": student,
            "coach": coach,
            "course": course,
            "session": session,
            "face": {"result": "pass", "seq": None},
        }
        return self.record(RecordKind.STUDENT_LOGIN, body, at)

    def logout(self, at: datetime, minutes: int, session: str = "S1") -> bytes:
        # the sign-out photo, as the agent's logout carries it (agent.session.student_logout)
        body = {"student": STUDENT, "coach": COACH, "session": session, "minutes": minutes,
                "face": {"result": "pass", "seq": None}}  # fmt: skip
        return self.record(RecordKind.STUDENT_LOGOUT, body, at)

    def minute(
        self,
        at: datetime,
        session: str = "S1",
        *,
        speed: int = 250,
        distance: int = 300,
        rpm: int | None = 1800,
        face: str | None = "pass",
        course: str = COURSE_C1_PART2,
        record_no: str | None = None,
    ) -> bytes:
        self.daily_seq += 1
        body = {
            "record_no": record_no or f"{self.id}{beijing_day(at):%y%m%d}{self.daily_seq:04d}",
            "student": STUDENT,
            "coach": COACH,
            "course": course,
            "session": session,
            "max_speed": speed,
            "distance_m": distance,
            "fix_count": 60,
            "fix30": {"lat": 35_416_000, "lon": 119_527_000, "mode": 3, "sats": 9, "hdop": 9, "speed": speed},
            "vehicle": None if rpm is None else {"rpm": rpm, "speed": speed, "ignition": True},
            "face": {"result": face, "seq": 1},
        }
        return self.record(RecordKind.MINUTE, body, at)

    def session(self, start: datetime, minutes: int, session: str = "S1", **minute_kw: Any) -> list[bytes]:
        """Login, ``minutes`` minute records one minute apart, logout."""
        out = [self.login(start, session)]
        out += [self.minute(start + timedelta(minutes=i), session, **minute_kw) for i in range(minutes)]
        out.append(self.logout(start + timedelta(minutes=minutes), minutes, session))
        return out

    def batch(self, records: list[bytes], batch_id: str | None = None) -> bytes:
        self.batches += 1
        return RecordBatch(self.id, batch_id or f"b{self.batches}", tuple(records)).encode()

    def lost(self, from_seq: int, to_seq: int, at: datetime = T0, reason: str = "database_lost") -> bytes:
        return LostNotice(self.id, self.chain, from_seq, to_seq, reason, at).sign(self.key)


def enrolment_request(terminal: TestTerminal, token: str, *, cn: str | None = None,
                      at: datetime | None = None) -> tuple[str, Any]:  # fmt: skip
    """What ``jiapei agent enrol`` sends for this terminal: (signed request, the TLS key its CSR holds)."""
    from firmware_protocols.messages import EnrolmentRequest
    from server.pki import make_csr, new_tls_key

    tls_key = new_tls_key()
    request = EnrolmentRequest(terminal.id, token, terminal.public_pem, make_csr(tls_key, cn or terminal.id).decode(),
                               (at or datetime.now(UTC)).replace(microsecond=0))  # fmt: skip
    return request.sign(terminal.key).decode(), tls_key


@pytest.fixture
def terminal() -> TestTerminal:
    return TestTerminal()


@pytest.fixture
def server_db(tmp_path: Path) -> Any:
    """A migrated SQLite server database: returns the session factory (``.url`` holds its URL)."""
    from server import db

    url = f"sqlite:///{tmp_path / 'server.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    sf = db.make_session_factory(engine)
    sf.url = url  # type: ignore[attr-defined]
    yield sf
    engine.dispose()


def enrol(session_factory: Any, terminal: TestTerminal, *, licence_class: str = "C1") -> None:
    """School, the terminal registered with its key, a coach and a student (direct rows, as the API writes them)."""
    from server.models import Coach, School, Student, Terminal, TerminalKey

    now = datetime.now(UTC)
    with session_factory() as s, s.begin():
        if s.get(School, SCHOOL) is None:
            s.add(School(id=SCHOOL, name="Rizhao Test Driving School", created_at=now))
            s.flush()
            s.add(
                Coach(
                    id=COACH,
                    name="Coach Wang",
                    school_id=SCHOOL,
                    classes=["C1", "C2"],
                    face_template="fr1:x",
                    photo_sha256=None,
                    created_at=now,
                )
            )
            s.add(
                Student(
                    id=STUDENT,
                    name="Student Li",
                    school_id=SCHOOL,
                    licence_class=licence_class,
                    face_template="fr1:y",
                    photo_sha256=None,
                    created_at=now,
                )
            )
        s.add(
            Terminal(
                id=terminal.id,
                car_plate="鲁L12345学",
                school_id=SCHOOL,
                public_key=terminal.public_pem,
                key_id=terminal.key_id,
                status="active",
                registered_at=now,
                last_seen_at=None,
            )
        )
        s.flush()
        s.add(TerminalKey(terminal_id=terminal.id, key_id=terminal.key_id, public_key=terminal.public_pem,
                          from_chain=1, added_at=now))  # fmt: skip


@pytest.fixture
def enrolled(server_db: Any, terminal: TestTerminal) -> Any:
    enrol(server_db, terminal)
    return server_db


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.db'}"
        return
    name = f"jiapei_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
