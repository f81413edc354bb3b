"""The escrow ledger's pure core: accounts, balanced entries in integer fen, invariants, the instruction state table.

Double entry: every :class:`Entry` is a set of legs (+ into an account, − out of it) that sum to zero, posted once
under its idempotency key. Accounts (``{kind}:{owner}``):

============  =====================================================================  ================
kind          holds                                                                  balance
============  =====================================================================  ================
external      the outside world's side of money paid in (one per student)             ≤ 0
escrow        the student's fee held at the bank, not yet released or refunded       ≥ 0
transit       money on its way out (a release or refund sent, not yet settled)       ≥ 0
school        money released to a school (owner: the school)                         ≥ 0
refund        money refunded to a student                                            ≥ 0
============  =====================================================================  ================

Invariants (:func:`violations`): the balances sum to zero; no account but ``external`` is ever negative; a posted
key is never posted again. Money leaves escrow only as ``reserve`` (escrow → transit) and reaches a school only as
``release`` (transit → school), each named by a bank instruction whose key says why (``release:{enrolment}:{event}``).

Nothing here does I/O or reads a clock; amounts are ``int`` fen (a ``bool`` or ``float`` is refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class AccountKind(StrEnum):
    EXTERNAL = "external"
    ESCROW = "escrow"
    TRANSIT = "transit"
    SCHOOL = "school"
    REFUND = "refund"


class LedgerError(Exception):
    """Base of the ledger's errors::

    LedgerError
    ├── UnbalancedEntry     legs do not sum to zero, a zero or non-integer leg, or one account twice
    └── NegativeBalance     posting would take an account other than ``external`` below zero (nothing is posted)
    """


class UnbalancedEntry(LedgerError):
    pass


class NegativeBalance(LedgerError):
    def __init__(self, account: str, balance: int) -> None:
        super().__init__(f"account {account} would go to {balance} fen")
        self.account, self.balance = account, balance


def account_id(kind: AccountKind, owner: str) -> str:
    return f"{kind.value}:{owner}"


def kind_of(account: str) -> AccountKind:
    return AccountKind(account.split(":", 1)[0])


def may_go_negative(account: str) -> bool:
    return kind_of(account) is AccountKind.EXTERNAL


@dataclass(frozen=True, slots=True)
class Leg:
    account: str
    amount: int


@dataclass(frozen=True, slots=True)
class Entry:
    """A balanced journal entry; ``kind`` says what it is (payment, reserve, unreserve, release, refund)."""

    key: str
    kind: str
    legs: tuple[Leg, ...]

    def __post_init__(self) -> None:
        if not self.key:
            raise UnbalancedEntry("an entry needs an idempotency key")
        if len(self.legs) < 2:
            raise UnbalancedEntry("an entry has at least two legs")
        for leg in self.legs:
            if type(leg.amount) is not int or leg.amount == 0:
                raise UnbalancedEntry(f"leg {leg.account}: amounts are non-zero integer fen, got {leg.amount!r}")
        if len({leg.account for leg in self.legs}) != len(self.legs):
            raise UnbalancedEntry("an account appears twice in one entry")
        if sum(leg.amount for leg in self.legs) != 0:
            raise UnbalancedEntry(f"entry {self.key}: legs sum to {sum(leg.amount for leg in self.legs)}, not 0")

    @property
    def amount(self) -> int:
        return sum(leg.amount for leg in self.legs if leg.amount > 0)


def transfer(key: str, kind: str, source: str, target: str, amount: int) -> Entry:
    """``amount`` fen from ``source`` to ``target`` (amount > 0)."""
    if type(amount) is not int or amount <= 0:
        raise UnbalancedEntry(f"a transfer moves a positive integer of fen, got {amount!r}")
    return Entry(key, kind, (Leg(source, -amount), Leg(target, amount)))


def escrow_of(student: str) -> str:
    return account_id(AccountKind.ESCROW, student)


def transit_of(student: str) -> str:
    return account_id(AccountKind.TRANSIT, student)


def payer_of(student: str) -> str:
    return account_id(AccountKind.EXTERNAL, student)


def school_account(school: str) -> str:
    return account_id(AccountKind.SCHOOL, school)


def refund_of(student: str) -> str:
    return account_id(AccountKind.REFUND, student)


def payment(student: str, amount: int, bank_txn: str) -> Entry:
    """Money the bank says reached the student's escrow; keyed by the bank's transaction (a duplicate is a no-op)."""
    return transfer(f"payment:{bank_txn}", "payment", payer_of(student), escrow_of(student), amount)


def reserve(student: str, amount: int, instruction: str) -> Entry:
    return transfer(f"reserve:{instruction}", "reserve", escrow_of(student), transit_of(student), amount)


def unreserve(student: str, amount: int, instruction: str) -> Entry:
    return transfer(f"unreserve:{instruction}", "unreserve", transit_of(student), escrow_of(student), amount)


def release(student: str, school: str, amount: int, instruction: str) -> Entry:
    return transfer(f"release:{instruction}", "release", transit_of(student), school_account(school), amount)


def refund(student: str, amount: int, instruction: str) -> Entry:
    return transfer(f"refund:{instruction}", "refund", transit_of(student), refund_of(student), amount)


@dataclass
class Book:
    """Balances and posted keys in memory: what the database layer loads for the accounts an entry touches, and
    what the property tests drive directly."""

    balances: dict[str, int] = field(default_factory=dict)
    posted: set[str] = field(default_factory=set)

    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)

    def post(self, entry: Entry) -> bool:
        """Apply ``entry`` once: False for a key already posted; :class:`NegativeBalance` (nothing applied) when an
        account that must stay ≥ 0 would go below."""
        if entry.key in self.posted:
            return False
        for leg in entry.legs:
            after = self.balance(leg.account) + leg.amount
            if after < 0 and not may_go_negative(leg.account):
                raise NegativeBalance(leg.account, after)
        for leg in entry.legs:
            self.balances[leg.account] = self.balance(leg.account) + leg.amount
        self.posted.add(entry.key)
        return True


def violations(balances: Mapping[str, int], entries: Iterable[Entry] = ()) -> list[str]:
    """What is wrong with a ledger: balances not summing to zero, a negative account that must not be, balances that
    differ from the sum of the entries' legs (when ``entries`` are given)."""
    out: list[str] = []
    total = sum(balances.values())
    if total != 0:
        out.append(f"balances sum to {total}, not 0")
    out += [f"{a} is negative ({b})" for a, b in sorted(balances.items()) if b < 0 and not may_go_negative(a)]
    entries = list(entries)
    if entries:
        derived: dict[str, int] = {}
        keys: set[str] = set()
        for e in entries:
            if e.key in keys:
                out.append(f"entry {e.key} posted twice")
            keys.add(e.key)
            for leg in e.legs:
                derived[leg.account] = derived.get(leg.account, 0) + leg.amount
        for a in sorted(set(derived) | set(balances)):
            if derived.get(a, 0) != balances.get(a, 0):
                out.append(f"{a}: balance {balances.get(a, 0)} but legs sum to {derived.get(a, 0)}")
    return out


# ---------------------------------------------------------------------------------------------- instructions
class Status(StrEnum):
    WAITING_FUNDS = "waiting_funds"  # decided, escrow does not hold the amount yet
    READY = "ready"  # money reserved (or, for a payment, nothing to reserve): to be sent to the bank
    SENT = "sent"  # the bank took it (or we are not sure: a timeout); its callback decides
    SETTLED = "settled"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Step(StrEnum):
    RESERVE = "reserve"
    SEND = "send"
    SETTLED = "settled"
    FAILED = "failed"
    CANCEL = "cancel"


#: The instruction state table: (status, step) → next status. A step not in the table is stale or repeated (a
#: duplicate or out-of-order callback) and changes nothing.
TRANSITIONS: dict[tuple[Status, Step], Status] = {
    (Status.WAITING_FUNDS, Step.RESERVE): Status.READY,
    (Status.WAITING_FUNDS, Step.CANCEL): Status.CANCELLED,
    (Status.READY, Step.SEND): Status.SENT,
    (Status.READY, Step.SETTLED): Status.SETTLED,  # the callback overtook our own record of sending
    (Status.READY, Step.FAILED): Status.FAILED,
    (Status.SENT, Step.SETTLED): Status.SETTLED,
    (Status.SENT, Step.FAILED): Status.FAILED,
}


def next_status(status: str, step: Step) -> Status | None:
    return TRANSITIONS.get((Status(status), step))


def release_event(part: int) -> str:
    if part not in (1, 2, 3, 4):
        raise ValueError(f"part {part} is not 1-4")
    return f"part_{part}_accepted"
