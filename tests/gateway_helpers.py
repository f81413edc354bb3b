"""Helpers for the gateway tests: RSA keys and certificates of national terminals, their registration, and a real
gateway running in a thread (its own event loop) on a free port against a real SQLite server database."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from firmware_protocols.identifiers import BEIJING
from server.api_national import register_national
from server.clock import utcnow
from server.gateway import Gateway, GatewayConfig
from server.ingest_jt808 import NationalIngestor
from server.ledger import Ledger
from server.policy import load_builtin_policy
from simulators.national_terminal import NationalTerminal

NATIONAL = "N000000000000001"
PHONE = "0013912345678001"
PLATE = "鲁L00001学"


@lru_cache(maxsize=4)
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    """RSA-2048 keys, made once per test run (``n`` picks one)."""
    return rsa.generate_private_key(65537, 2048)


def certificate_pem(key: rsa.RSAPrivateKey, terminal: str, days: int = 365) -> str:
    """A self-signed X.509 certificate for ``terminal`` (CN), as a vendor's or an operator's CA would issue."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, terminal)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM).decode()


def register(sf: Any, terminal: str = NATIONAL, phone: str = PHONE, plate: str = PLATE, key_no: int = 0,
             school: str = "S000000000000001") -> None:  # fmt: skip
    """The operator registers a national terminal (as ``POST /api/national-terminals`` does)."""
    with sf() as s, s.begin():
        register_national(s, terminal=terminal, phone=phone, car_plate=plate, school=school,
                          pem=certificate_pem(rsa_key(key_no), terminal), now=datetime.now(UTC))  # fmt: skip


def training_start(now: datetime | None = None) -> datetime:
    """09:00 Beijing time, today if that is at least 3 hours ago, else yesterday (inside the practical window, in
    the past, within the backfill window)."""
    now = now or datetime.now(UTC)
    local = now.astimezone(BEIJING)
    start = local.replace(hour=9, minute=0, second=0, microsecond=0)
    if now - start < timedelta(hours=3):
        start -= timedelta(days=1)
    return start.astimezone(UTC)


@dataclass
class RunningGateway:
    """A real gateway in a background thread: ``.port``, ``.gateway`` (its counters), ``.stop()``."""

    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    port: int

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def wait_for(self, reason: str, n: int = 1, timeout: float = 10.0) -> bool:
        return self.gateway.wait_for(lambda c: c[reason] >= n, timeout)

    def terminal(self, **kw: Any) -> NationalTerminal:
        args: dict[str, Any] = {"terminal": NATIONAL, "phone": PHONE, "key": rsa_key(0), "plate": PLATE,
                                "port": self.port, "reply_timeout": 10.0}  # fmt: skip
        args.update(kw)
        return NationalTerminal(**args)


def start_gateway(sf: Any, policy: str = "national-2016", **config: Any) -> RunningGateway:
    ledger = Ledger(sf, load_builtin_policy(policy), utcnow)
    ingestor = NationalIngestor(sf, utcnow, after_commit=ledger.after_ingest)
    gateway = Gateway(ingestor, GatewayConfig(**{"sweep_s": 0.1, **config}))
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(gateway.start("127.0.0.1", 0))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the gateway did not start")
    return RunningGateway(gateway, loop, thread, gateway.port)
