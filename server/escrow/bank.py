"""The bank adapter: instructions to the escrow bank over JSON/HTTP (httpx), and its signed callbacks.

Errors::

    BankError               base of everything raised here
    ├── BankUnavailable     network error, timeout, 5xx or an unreadable answer: retry later with the SAME key
    └── BankRefused         4xx: the bank refuses the instruction as sent (a key reused with another body, …)

Every instruction carries an idempotency key; the bank executes a key once and answers a repeat as the first time,
so a timeout (did it happen?) is resolved by sending the same key again. Outcomes arrive as callbacks
(``payment.settled``, ``transfer.settled``, ``transfer.failed``) signed with HMAC-SHA256 over the exact body, in any
order, possibly twice or late; the daily statement (:meth:`BankClient.statement`) is the bank's word for
reconciliation. Accounts at the bank: ``ESC-{student}`` (the student's escrow sub-account), ``SCH-{school}``,
``CARD-{student}`` (where refunds go).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Bank-Signature"
CALLBACK_TYPES = ("payment.settled", "transfer.settled", "transfer.failed")
#: 4xx answers that still mean "try again later".
RETRYABLE_4XX = frozenset({408, 425, 429})


class BankError(Exception):
    """Base of the bank adapter's errors."""


class BankUnavailable(BankError):
    pass


class BankRefused(BankError):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RemoteCallbackError(BankError):
    """A callback that is not the bank's (bad signature) or not readable."""


def escrow_account(student: str) -> str:
    return f"ESC-{student}"


def school_account(school: str) -> str:
    return f"SCH-{school}"


def card_account(student: str) -> str:
    return f"CARD-{student}"


def student_of_escrow(account: str) -> str | None:
    return account.removeprefix("ESC-") if account.startswith("ESC-") else None


@dataclass(frozen=True)
class BankCallback:
    event_id: str
    type: str
    ref: str | None
    txn_id: str
    amount: int
    account: str  # the account credited (payment) or debited (transfer)
    counterparty: str | None
    at: datetime
    reason: str | None
    body: dict[str, Any]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BankCallback:
        try:
            amount = d["amount"]
            if type(amount) is not int or amount <= 0:
                raise RemoteCallbackError(f"amount must be a positive integer of fen, got {amount!r}")
            if d["type"] not in CALLBACK_TYPES:
                raise RemoteCallbackError(f"unknown callback type {d['type']!r}")
            at = datetime.fromisoformat(str(d["at"]))
            if at.tzinfo is None:
                raise RemoteCallbackError("callback time without an offset")
            return cls(str(d["event_id"]), str(d["type"]), None if d.get("ref") is None else str(d["ref"]),
                       str(d["txn_id"]), amount, str(d["account"]),
                       None if d.get("counterparty") is None else str(d["counterparty"]), at,
                       None if d.get("reason") is None else str(d["reason"]), dict(d))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteCallbackError(f"unreadable callback: {exc}") from exc


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_callback(secret: str, body: bytes, signature: str | None) -> BankCallback:
    """The callback in ``body`` if ``signature`` is the bank's HMAC of exactly these bytes."""
    if not signature or not hmac.compare_digest(sign(secret, body), signature.strip().lower()):
        raise RemoteCallbackError("bad or missing callback signature")
    try:
        d = json.loads(body)
    except ValueError as exc:
        raise RemoteCallbackError("callback body is not JSON") from exc
    if not isinstance(d, dict):
        raise RemoteCallbackError("callback body is not an object")
    return BankCallback.from_json(d)


@dataclass(frozen=True)
class StatementLine:
    txn_id: str
    ref: str | None
    type: str  # "payment" | "transfer"
    amount: int
    from_account: str
    to_account: str
    at: datetime


class BankPort(Protocol):
    def collect(self, key: str, student: str, amount: int) -> str: ...

    def transfer(self, key: str, from_account: str, to_account: str, amount: int) -> str: ...

    def statement(self, day: str) -> list[StatementLine]: ...


class BankClient:
    """The bank's HTTP interface. Thread-safe as httpx.Client is; close() when done."""

    def __init__(self, base_url: str, timeout: float = 5.0, *, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    def collect(self, key: str, student: str, amount: int) -> str:
        """Ask the bank to take ``amount`` fen from the student's card into their escrow account; the bank's
        transaction id (settlement comes as a ``payment.settled`` callback)."""
        return self._post("/api/v1/collections", {"key": key, "payer": card_account(student),
                                                  "account": escrow_account(student), "amount": amount})  # fmt: skip

    def transfer(self, key: str, from_account: str, to_account: str, amount: int) -> str:
        return self._post("/api/v1/transfers", {"key": key, "from_account": from_account, "to_account": to_account,
                                                "amount": amount})  # fmt: skip

    def statement(self, day: str) -> list[StatementLine]:
        try:
            r = self._http.get("/api/v1/statement", params={"day": day})
        except httpx.HTTPError as exc:
            raise BankUnavailable(f"bank unreachable: {exc}") from exc
        if r.status_code != 200:
            raise BankUnavailable(f"bank statement answered {r.status_code}")
        try:
            return [StatementLine(str(x["txn_id"]), x.get("ref"), str(x["type"]), int(x["amount"]),
                                  str(x["from_account"]), str(x["to_account"]), datetime.fromisoformat(x["at"]))
                    for x in r.json()["lines"]]  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise BankUnavailable(f"unreadable statement: {exc}") from exc

    def _post(self, path: str, body: dict[str, Any]) -> str:
        try:
            r = self._http.post(path, json=body)
        except httpx.TimeoutException as exc:
            raise BankUnavailable(f"bank timed out on {body['key']}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise BankUnavailable(f"bank unreachable: {exc}") from exc
        if r.status_code >= 500 or r.status_code in RETRYABLE_4XX:
            raise BankUnavailable(f"bank answered {r.status_code} for {body['key']}")
        if r.status_code >= 400:
            raise BankRefused(f"bank refused {body['key']}: {r.status_code} {r.text[:200]}", r.status_code)
        try:
            return str(r.json()["txn_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BankUnavailable(f"unreadable bank answer for {body['key']}") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BankClient:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
