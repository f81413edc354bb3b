"""Terminals held by ONE gateway process: N national terminals connect and authenticate (RSA, real database), then
each sends a heartbeat every 30 s and a position (0x0200) every 10 s, for a while. Prints how many were held, the
answers' latency, the gateway's CPU and its memory per connection.

Run: python bench/bench_gateway.py [--terminals 10000] [--duration 60]
(the gateway runs in a child process: ``python bench/bench_gateway.py --serve DATABASE_URL``)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from firmware_protocols import envelope
from firmware_protocols.jt808 import (
    Header,
    Heartbeat,
    Location,
    Message,
    TrainingAuthenticate,
    Version,
    encode_packet,
)
from firmware_protocols.jt808.signing import sign_timestamp

HEARTBEAT_S = 30.0
POSITION_S = 10.0
SCHOOL = "S000000000000001"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepare(url: str, n: int, key: rsa.RSAPrivateKey) -> list[tuple[str, str]]:
    """A migrated database with a school and ``n`` national terminals sharing one key (key generation is not what
    is measured); returns (terminal, header number) pairs."""
    from server import db
    from server.models import NationalTerminal, School, Terminal, TerminalKey

    db.upgrade(url)
    sf = db.make_session_factory(db.make_engine(url))
    pem = envelope.public_key_to_pem(key.public_key())
    kid = envelope.key_id(key.public_key())
    now = datetime.now(UTC)
    out = [(f"B{i:015d}", f"{13900000000 + i:016d}") for i in range(n)]
    with sf() as s, s.begin():
        s.add(School(id=SCHOOL, name="bench", created_at=now))
        s.flush()
        s.add_all(Terminal(id=t, car_plate=f"B{i}", school_id=SCHOOL, public_key=pem, key_id=kid, status="active",
                           registered_at=now, last_seen_at=None) for i, (t, _) in enumerate(out))  # fmt: skip
        s.flush()
        s.add_all(TerminalKey(terminal_id=t, key_id=kid, public_key=pem, from_chain=1, added_at=now) for t, _ in out)
        s.add_all(NationalTerminal(terminal_id=t, phone=p, certificate=None, key_origin="terminal",
                                   last_auth_timestamp=None, registered_at=now) for t, p in out)  # fmt: skip
    return out


class Client(asyncio.Protocol):
    def __init__(self, bench: Bench, phone: str) -> None:
        self.bench, self.phone = bench, phone
        self.transport: asyncio.Transport | None = None
        self.sent_at: list[float] = []
        self.authed = asyncio.get_running_loop().create_future()
        self.serial = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, message: Message) -> None:
        assert self.transport is not None
        self.serial = (self.serial + 1) & 0xFFFF
        frame = encode_packet(Header(message.msg_id, self.phone, self.serial, Version.TRAINING), message)
        self.sent_at.append(time.monotonic())
        self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for _ in range(data.count(b"\x7e") // 2):
            if self.sent_at:
                sent = self.sent_at.pop(0)
                if self.authed.done():
                    self.bench.latencies.append(now - sent)
                    self.bench.answers += 1
                else:
                    self.authed.set_result(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.bench.lost += 1
        if not self.authed.done():
            self.authed.set_exception(ConnectionError("closed before authentication"))


def _factory(bench: Bench, phone: str) -> Callable[[], Client]:
    return lambda: Client(bench, phone)


class Bench:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.answers = 0
        self.lost = 0


async def load(port: int, terminals: list[tuple[str, str]], key: rsa.RSAPrivateKey, duration: float,
               gateway_pid: int) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    bench = Bench()
    stamp = int(time.time())
    auth = TrainingAuthenticate(datetime.fromtimestamp(stamp, UTC), sign_timestamp(stamp, key))
    rss0 = rss_kib(gateway_pid)
    t0 = time.monotonic()
    clients: list[Client] = []
    for i in range(0, len(terminals), 500):  # connect in waves, as a fleet does after a gateway restart
        wave = terminals[i : i + 500]
        made = await asyncio.gather(*(loop.create_connection(_factory(bench, p), "127.0.0.1", port)
                                      for _, p in wave), return_exceptions=True)  # fmt: skip
        for item in made:
            if isinstance(item, BaseException):
                print(f"connect failed: {item}")
                continue
            client = item[1]
            client.send(auth)
            clients.append(client)
    results = await asyncio.gather(*(c.authed for c in clients), return_exceptions=True)
    held = [c for c, r in zip(clients, results, strict=True) if not isinstance(r, BaseException)]
    t_auth = time.monotonic() - t0
    rss1 = rss_kib(gateway_pid)
    print(f"connected and authenticated {len(held)} of {len(terminals)} terminals in {t_auth:.1f} s "
          f"({len(held) / t_auth:.0f}/s, one RSA verification + one committed transaction each)")  # fmt: skip
    print(f"gateway RSS {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB: "
          f"{(rss1 - rss0) / max(1, len(held)):.1f} KiB per authenticated connection")  # fmt: skip

    position = Location(0, 3, 35.416, 119.527, 36.0, 90, datetime.now(UTC), 12, None, ((0x01, b"\x00\x00\x27\x10"),))

    async def terminal(c: Client) -> None:
        next_beat = time.monotonic() + random.uniform(0, HEARTBEAT_S)  # noqa: S311
        next_pos = time.monotonic() + random.uniform(0, POSITION_S)  # noqa: S311
        end = time.monotonic() + duration
        while True:
            wake = min(next_beat, next_pos)
            if wake > end:
                return
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            if c.transport is None or c.transport.is_closing():
                return
            if wake == next_beat:
                c.send(Heartbeat())
                next_beat += HEARTBEAT_S
            else:
                c.send(position)
                next_pos += POSITION_S

    cpu1 = cpu_s(gateway_pid)
    t1 = time.monotonic()
    await asyncio.gather(*(terminal(c) for c in held))
    await asyncio.sleep(2)
    elapsed = time.monotonic() - t1
    cpu2 = cpu_s(gateway_pid)
    lat = sorted(bench.latencies)
    expected = len(held) * duration * (1 / HEARTBEAT_S + 1 / POSITION_S)
    print(f"steady state {elapsed:.0f} s: {bench.answers} answers (~{expected:.0f} expected), "
          f"{bench.answers / elapsed:.0f} msg/s, lost connections {bench.lost}")  # fmt: skip
    if lat:
        print(f"answer latency p50 {lat[len(lat) // 2] * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms,"
              f" max {lat[-1] * 1000:.1f} ms")  # fmt: skip
    print(f"gateway CPU {100 * (cpu2 - cpu1) / elapsed:.1f} % of one core in steady state; "
          f"RSS {rss_kib(gateway_pid) / 1024:.1f} MiB")  # fmt: skip
    for c in held:
        if c.transport is not None:
            c.transport.close()


def serve(url: str) -> None:
    from server.gateway.main import build_gateway
    from server.gateway.service import Gateway
    from server.settings import Settings

    async def run() -> None:
        gateway = build_gateway(Settings(database_url=url, policy="national-2016"), auth_timeout_s=600.0)
        assert isinstance(gateway, Gateway)
        port = await gateway.start("127.0.0.1", 0)
        print(port, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), stop.set)
        await gateway.serve_until(stop)

    asyncio.run(run())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--terminals", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--serve")
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    key = rsa.generate_private_key(65537, 2048)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        terminals = prepare(url, args.terminals, key)
        child = subprocess.Popen([sys.executable, __file__, "--serve", url], stdout=subprocess.PIPE,
                                 stdin=subprocess.PIPE, text=True)  # fmt: skip
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        try:
            asyncio.run(load(port, terminals, key, args.duration, child.pid))
        finally:
            child.stdin.write("stop\n")
            child.stdin.flush()
            child.wait(60)


if __name__ == "__main__":
    main()
