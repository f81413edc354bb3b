"""Shared helpers of the platform tests (issue 13): servers on free ports in threads, a fake bank, a small world.

``serve(app)`` runs any ASGI app under uvicorn on a free port (yields its base URL); ``FakeBank`` is an in-memory
bank port whose callbacks the test delivers in any order, as often as it likes; ``seed_school`` writes a school with
an offer, a coach, a car (terminal) and the account rows the API needs.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn

from server.escrow.bank import BankCallback, StatementLine, card_account, escrow_account, student_of_escrow

STARTUP_TIMEOUT = 10.0


def wait_for(condition: Callable[[], bool], timeout: float = STARTUP_TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT)
        sock.close()


@dataclass
class FakeBank:
    """The bank port in memory: executes each key once, queues its callback; ``fail_next`` transfers fail."""

    callbacks: list[BankCallback] = field(default_factory=list)
    txns: dict[str, tuple[str, BankCallback]] = field(default_factory=dict)
    fail_next: int = 0
    down: bool = False
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def _run(self, key: str, type_: str, account: str, counterparty: str, amount: int) -> str:
        from server.escrow.bank import BankUnavailable

        if self.down:
            raise BankUnavailable("fake bank down")
        if key in self.txns:
            txn, cb = self.txns[key]
            self.callbacks.append(cb)  # a repeat gets its callback again
            return txn
        n = next(self._ids)
        if type_ == "transfer.settled" and self.fail_next > 0:
            self.fail_next -= 1
            type_ = "transfer.failed"
        body = {"event_id": f"EV{n}", "type": type_, "ref": key, "txn_id": f"BT{n}", "amount": amount,
                "account": account, "counterparty": counterparty, "at": datetime.now(UTC).isoformat(),
                "reason": "bank_declined" if type_ == "transfer.failed" else None}  # fmt: skip
        cb = BankCallback.from_json(body)
        self.txns[key] = (f"BT{n}", cb)
        self.callbacks.append(cb)
        return f"BT{n}"

    def collect(self, key: str, student: str, amount: int) -> str:
        return self._run(key, "payment.settled", escrow_account(student), card_account(student), amount)

    def transfer(self, key: str, from_account: str, to_account: str, amount: int) -> str:
        return self._run(key, "transfer.settled", from_account, to_account, amount)

    def statement(self, day: str) -> list[StatementLine]:
        out = []
        for key, (txn, cb) in self.txns.items():
            if cb.type.endswith("settled"):
                kind = "payment" if cb.type.startswith("payment") else "transfer"
                src, dst = (cb.counterparty or "", cb.account) if kind == "payment" else (cb.account,
                                                                                         cb.counterparty or "")
                out.append(StatementLine(txn, key, kind, cb.amount, src, dst, cb.at))
        return out


def student_of(cb: BankCallback) -> str | None:
    return student_of_escrow(cb.account)


def seed_school(sf: Any, *, school: str, name: str, coach: str, terminal: str, price_fen: int,
                classes: tuple[str, ...] = ("C1",)) -> None:  # fmt: skip
    from server.models import Coach, School, SchoolOffer, Terminal

    now = datetime.now(UTC)
    with sf() as s, s.begin():
        if s.get(School, school) is None:
            s.add(School(id=school, name=name, created_at=now))
            s.flush()
        for c in classes:
            s.add(SchoolOffer(school_id=school, licence_class=c, price_fen=price_fen, updated_at=now))
        s.add(Coach(id=coach, name="张教练", school_id=school, classes=list(classes), face_template="fr1:x",
                    created_at=now))  # fmt: skip
        if terminal and s.get(Terminal, terminal) is None:
            s.add(Terminal(id=terminal, car_plate="鲁L0001学", school_id=school, public_key="-", key_id="k",
                           status="active", registered_at=now, last_seen_at=None))  # fmt: skip
