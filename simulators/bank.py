"""Escrow bank simulator: the bank that holds students' fees (先培后付), as a real HTTP service with its own failures.

JSON over HTTP, documented at ``/docs`` (OpenAPI). Amounts are integer fen. Every instruction carries an
idempotency ``key``: a repeat with the same body gets the first answer (and its callback again, same event id); the
same key with another body gets 409.

- ``POST /api/v1/collections`` ``{key, payer, account, amount}``: take ``amount`` from the payer's card into an
  escrow account → 200 ``{txn_id, status: "accepted"}``; callback ``payment.settled``.
- ``POST /api/v1/transfers`` ``{key, from_account, to_account, amount}`` → 200 ``{txn_id, status}``; callback
  ``transfer.settled``, or ``transfer.failed`` (``insufficient_funds``, or an injected ``bank_declined``).
- ``GET /api/v1/statement?day=YYYY-MM-DD``: the settled movements of that Beijing day (the reconciliation source).
- ``GET /api/v1/accounts/{account}``: a balance. ``GET /api/v1/callbacks``: every callback made, for tests.
- Callbacks: ``POST {callback_url}`` with ``{event_id, type, ref, txn_id, amount, account, counterparty, at,
  reason}`` and ``X-Bank-Signature: hex(HMAC-SHA256(secret, body))``, retried until answered 2xx.
- ``POST /admin/faults`` ``{timeout_next, timeout_seconds, duplicate_next, reorder_next, drop_next,
  fail_transfer_next}``: the next n instructions are executed but answered only after ``timeout_seconds`` (the
  client times out and retries the same key); the next n callbacks are sent twice / held and sent in reverse order
  once n are held (or on ``POST /admin/flush``) / never sent (only the statement has them); the next n transfers
  fail. ``POST /admin/config`` ``{callback_url, secret}``.

State is in memory (a bank outage is a test of the client, not of this simulator's disk).
Run: ``jiapei sim bank --port 8091 --callback-url http://127.0.0.1:8080/api/bank/callbacks --secret …``
(env ``JIAPEI_BANK_SECRET``). This module uses neither ``agent`` nor ``server``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import httpx
from fastapi import Body, FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

BEIJING = ZoneInfo("Asia/Shanghai")
MAX_AMOUNT = 10**10  # 100 million yuan: no driving-school fee is larger
MAX_TIMEOUT_SECONDS = 30.0
#: Callback delivery: first retry after this, doubled up to the cap; given up after MAX_DELIVERIES tries.
DELIVERY_RETRY_SECONDS, DELIVERY_RETRY_MAX, MAX_DELIVERIES = 0.1, 5.0, 60
CALLBACK_TIMEOUT = 5.0


class CollectionIn(BaseModel):
    key: str = Field(min_length=1, max_length=200)
    payer: str = Field(min_length=1, max_length=64)
    account: str = Field(pattern=r"^ESC-.{1,60}$")
    amount: int = Field(gt=0, le=MAX_AMOUNT)


class TransferIn(BaseModel):
    key: str = Field(min_length=1, max_length=200)
    from_account: str = Field(min_length=1, max_length=64)
    to_account: str = Field(min_length=1, max_length=64)
    amount: int = Field(gt=0, le=MAX_AMOUNT)


class Accepted(BaseModel):
    txn_id: str
    status: Literal["accepted"] = "accepted"


class Faults(BaseModel):
    timeout_next: int = Field(default=0, ge=0)
    timeout_seconds: float = Field(default=0.0, ge=0.0, le=MAX_TIMEOUT_SECONDS)
    duplicate_next: int = Field(default=0, ge=0)
    reorder_next: int = Field(default=0, ge=0)
    drop_next: int = Field(default=0, ge=0)
    fail_transfer_next: int = Field(default=0, ge=0)


class Config(BaseModel):
    callback_url: str | None = None
    secret: str | None = None


@dataclass
class Txn:
    txn_id: str
    key: str
    type: str  # payment | transfer
    amount: int
    from_account: str
    to_account: str
    body: dict[str, Any]
    status: str  # settled | failed
    at: datetime
    event: dict[str, Any] = field(default_factory=dict)


class Bank:
    """Accounts, transactions and the callback outbox, behind one lock."""

    def __init__(self, callback_url: str | None, secret: str | None) -> None:
        self.config = Config(callback_url=callback_url, secret=secret)
        self.faults = Faults()
        self.balances: dict[str, int] = {}
        self.txns: dict[str, Txn] = {}  # by key
        self.sent: list[dict[str, Any]] = []
        self._held: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._deliver_loop, name="bank-callbacks", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._outbox.put(None)
        self._thread.join(5)

    # --- instructions --------------------------------------------------------------------------------------
    def execute(self, kind: str, key: str, body: dict[str, Any]) -> Txn | None:
        """Run an instruction once per key; None when the key was used with another body."""
        with self._lock:
            old = self.txns.get(key)
            if old is not None:
                if old.body != body:
                    return None
                self._emit(old.event)  # a repeat: the first answer and its callback again
                return old
            n = next(self._ids)
            now = datetime.now(UTC)
            if kind == "payment":
                src, dst = body["payer"], body["account"]
                status, reason = "settled", None
            else:
                src, dst = body["from_account"], body["to_account"]
                status, reason = "settled", None
                if self.faults.fail_transfer_next > 0:
                    self.faults.fail_transfer_next -= 1
                    status, reason = "failed", "bank_declined"
                elif self.balances.get(src, 0) < body["amount"]:
                    status, reason = "failed", "insufficient_funds"
            if status == "settled":
                self.balances[src] = self.balances.get(src, 0) - body["amount"]
                self.balances[dst] = self.balances.get(dst, 0) + body["amount"]
            txn = Txn(f"BT{n:010d}", key, kind, body["amount"], src, dst, body, status, now)
            txn.event = {"event_id": f"EV{n:010d}", "type": f"{kind}.{status}", "ref": key, "txn_id": txn.txn_id,
                         "amount": txn.amount, "account": dst if kind == "payment" else src,
                         "counterparty": src if kind == "payment" else dst, "at": now.isoformat(),
                         "reason": reason}  # fmt: skip
            self.txns[key] = txn
            self._emit(txn.event)
            return txn

    def take_timeout(self) -> float:
        with self._lock:
            if self.faults.timeout_next > 0:
                self.faults.timeout_next -= 1
                return self.faults.timeout_seconds
            return 0.0

    def statement(self, day: str) -> list[dict[str, Any]]:
        with self._lock:
            return [{"txn_id": t.txn_id, "ref": t.key, "type": t.type, "amount": t.amount,
                     "from_account": t.from_account, "to_account": t.to_account, "at": t.at.isoformat()}
                    for t in sorted(self.txns.values(), key=lambda t: t.txn_id)
                    if t.status == "settled" and t.at.astimezone(BEIJING).date().isoformat() == day]  # fmt: skip

    # --- callbacks -----------------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        """Queue a callback through the fault rules (lock held)."""
        if self.faults.drop_next > 0:
            self.faults.drop_next -= 1
            log.info("bank: dropping callback %s (fault)", event["event_id"])
            return
        copies = 1
        if self.faults.duplicate_next > 0:
            self.faults.duplicate_next -= 1
            copies = 2
        if self.faults.reorder_next > 0:
            self.faults.reorder_next -= 1
            self._held += [event] * copies
            if self.faults.reorder_next == 0:
                self._release_held()
            return
        for _ in range(copies):
            self._outbox.put(event)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for event in reversed(held):
            self._outbox.put(event)

    def flush(self) -> int:
        with self._lock:
            n = len(self._held)
            self.faults.reorder_next = 0
            self._release_held()
            return n

    def _deliver_loop(self) -> None:
        with httpx.Client(timeout=CALLBACK_TIMEOUT) as http:
            while True:
                event = self._outbox.get()
                if event is None:
                    return
                self._deliver(http, event)

    def _deliver(self, http: httpx.Client, event: dict[str, Any]) -> None:
        delay = DELIVERY_RETRY_SECONDS
        for _ in range(MAX_DELIVERIES):
            url, secret = self.config.callback_url, self.config.secret
            if not url or not secret:
                time.sleep(delay)  # not configured yet: wait for POST /admin/config
                delay = min(DELIVERY_RETRY_MAX, delay * 2)
                continue
            body = json.dumps(event, separators=(",", ":")).encode()
            signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            try:
                r = http.post(url, content=body, headers={"Content-Type": "application/json",
                                                          "X-Bank-Signature": signature})  # fmt: skip
                if r.status_code < 300:
                    with self._lock:
                        self.sent.append(event)
                    return
                log.info("bank: callback %s answered %d", event["event_id"], r.status_code)
            except httpx.HTTPError as exc:
                log.info("bank: callback %s failed: %s", event["event_id"], exc)
            time.sleep(delay)
            delay = min(DELIVERY_RETRY_MAX, delay * 2)
        log.warning("bank: gave up delivering callback %s", event["event_id"])


def create_app(callback_url: str | None = None, secret: str | None = None) -> FastAPI:
    bank = Bank(callback_url, secret)
    app = FastAPI(title="jiapei escrow bank simulator", version="1",
                  description="Fees held in escrow: collections, transfers, signed callbacks, daily statements.")
    app.state.bank = bank

    def answer(kind: str, body: BaseModel) -> Any:
        delay = bank.take_timeout()
        txn = bank.execute(kind, body.model_dump()["key"], body.model_dump())
        if delay:
            time.sleep(delay)  # executed, answered late: the client has timed out by now
        if txn is None:
            return JSONResponse(status_code=409, content={"detail": "key used with another body"})
        return Accepted(txn_id=txn.txn_id)

    @app.post("/api/v1/collections", response_model=Accepted, responses={409: {"description": "key conflict"}})
    def collect(body: CollectionIn) -> Any:
        return answer("payment", body)

    @app.post("/api/v1/transfers", response_model=Accepted, responses={409: {"description": "key conflict"}})
    def transfer(body: TransferIn) -> Any:
        return answer("transfer", body)

    @app.get("/api/v1/statement")
    def statement(day: Annotated[str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")]) -> dict[str, Any]:
        return {"day": day, "lines": bank.statement(day)}

    @app.get("/api/v1/accounts/{account}")
    def account(account: str) -> dict[str, Any]:
        with bank._lock:
            return {"account": account, "balance": bank.balances.get(account, 0)}

    @app.get("/api/v1/callbacks")
    def callbacks() -> list[dict[str, Any]]:
        with bank._lock:
            return list(bank.sent)

    @app.get("/admin/faults", response_model=Faults)
    def get_faults() -> Faults:
        return bank.faults

    @app.post("/admin/faults", response_model=Faults)
    def set_faults(faults: Annotated[Faults, Body()]) -> Faults:
        with bank._lock:
            bank.faults = faults
        return faults

    @app.post("/admin/flush")
    def flush() -> dict[str, int]:
        return {"released": bank.flush()}

    @app.post("/admin/config")
    def config(cfg: Annotated[Config, Body()]) -> dict[str, str | None]:
        bank.config = cfg
        return {"callback_url": cfg.callback_url}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def run(host: str, port: int, callback_url: str | None, secret: str | None) -> None:
    import uvicorn

    uvicorn.run(create_app(callback_url, secret), host=host, port=port, log_level="info")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--callback-url", default=None)
    parser.add_argument("--secret", default=os.environ.get("JIAPEI_BANK_SECRET"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    run(args.host, args.port, args.callback_url, args.secret)


if __name__ == "__main__":
    main()
