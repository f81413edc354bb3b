"""The escrow's database layer: enrolment fees, bank instructions, callbacks, releases on accepted stage reviews,
refunds, and the daily reconciliation. Thin: which money moves is decided by :mod:`server.escrow.core`.

Every write is one transaction that locks the accounts it touches (``FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` serialises writers) and posts core entries under unique keys, so a repeated callback, a repeated
pass of the worker or two workers at once post nothing twice. The database refuses a negative balance itself
(``ck_escrow_accounts_not_negative``) should a bug ever get past the core's check.

What moves a school's money (domain.md "Decisions"): ``enrolment_confirmed`` (the whole fee reached escrow) and
``part_N_accepted`` (the exam side accepted the stage review of part N: a ``stage_reviews`` row with status
``accepted``, polled idempotently). Each release instruction carries the review's notice id and records digest.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmware_protocols.identifiers import BEIJING
from server.clock import Clock
from server.db import SessionFactory
from server.escrow import core
from server.escrow.bank import (
    BankCallback,
    BankPort,
    BankRefused,
    BankUnavailable,
    card_account,
    escrow_account,
    school_account,
    student_of_escrow,
)
from server.models import (
    ENROLMENT_ACTIVE,
    REVIEW_ACCEPTED,
    BankEvent,
    BankInstruction,
    Enrolment,
    EscrowAccount,
    EscrowEntry,
    EscrowLeg,
    Reconciliation,
    SchoolOffer,
    StageReview,
    Student,
)
from server.policy import Policy

log = logging.getLogger(__name__)

S = core.Status
#: Backoff of a bank call that failed (seconds), doubled per attempt up to the cap.
RETRY_BASE_SECONDS, RETRY_MAX_SECONDS = 1.0, 300.0
#: Instructions sent per worker pass.
BATCH_SIZE = 50


class EscrowRefused(Exception):
    """A request the escrow rules refuse (no offer for the class, already enrolled, nothing to pay, …)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EscrowService:
    def __init__(self, session_factory: SessionFactory, policy: Policy, bank: BankPort, clock: Clock) -> None:
        self._sf, self.policy, self.bank, self._clock = session_factory, policy, bank, clock

    # ------------------------------------------------------------------------------------------ ledger
    def post(self, s: Session, entry: core.Entry, **meta: Any) -> bool:
        """Post ``entry`` in ``s``'s transaction once (False: its key was posted before)."""
        if s.scalar(select(EscrowEntry.id).where(EscrowEntry.key == entry.key)) is not None:
            return False
        now = self._clock()
        ids = sorted(leg.account for leg in entry.legs)  # one lock order everywhere: no deadlocks
        rows = {a.id: a for a in s.scalars(select(EscrowAccount).where(EscrowAccount.id.in_(ids)).with_for_update())}
        for a in ids:
            if a not in rows:
                kind = core.kind_of(a)
                rows[a] = EscrowAccount(id=a, kind=kind.value, owner=a.split(":", 1)[1], balance=0, updated_at=now)
                s.add(rows[a])
        book = core.Book({a: rows[a].balance for a in ids})
        book.post(entry)  # raises NegativeBalance: the caller's transaction rolls back
        for a in ids:
            rows[a].balance, rows[a].updated_at = book.balances[a], now
        row = EscrowEntry(key=entry.key, kind=entry.kind, amount=entry.amount, at=now, detail=meta.pop("detail", {}),
                          student_id=meta.pop("student_id"), **meta)  # fmt: skip
        s.add(row)
        s.flush()
        s.add_all(EscrowLeg(entry_id=row.id, account_id=leg.account, amount=leg.amount) for leg in entry.legs)
        s.flush()
        return True

    def balance(self, s: Session, account: str) -> int:
        return s.scalar(select(EscrowAccount.balance).where(EscrowAccount.id == account)) or 0

    # ------------------------------------------------------------------------------------------ enrolment
    def enrol(self, s: Session, student: Student, school: str) -> Enrolment:
        """A new active enrolment at ``school`` for the student's class, fee from the school's offer (in ``s``)."""
        if s.scalar(select(Enrolment.id).where(Enrolment.student_id == student.id,
                                               Enrolment.status == ENROLMENT_ACTIVE)) is not None:  # fmt: skip
            raise EscrowRefused("already_enrolled", "the student has an active enrolment: withdraw or transfer first")
        offer = s.get(SchoolOffer, (school, student.licence_class))
        if offer is None:
            raise EscrowRefused("no_offer", f"school {school} offers no class {student.licence_class}")
        e = Enrolment(student_id=student.id, school_id=school, licence_class=student.licence_class,
                      fee_fen=offer.price_fen, allocation=self.policy.escrow.allocate(offer.price_fen),
                      status=ENROLMENT_ACTIVE, created_at=self._clock())  # fmt: skip
        s.add(e)
        s.flush()
        log.info("enrolment %d: %s at %s, fee %d fen", e.id, student.id, school, e.fee_fen)
        return e

    def paid(self, s: Session, e: Enrolment) -> int:
        """Fen paid into escrow by this student (all enrolments: escrow follows the student)."""
        return s.scalar(select(func.coalesce(func.sum(EscrowEntry.amount), 0)).where(
            EscrowEntry.student_id == e.student_id, EscrowEntry.kind == "payment")) or 0  # fmt: skip

    def outstanding(self, s: Session, e: Enrolment) -> int:
        """Fen still to pay: the fee less what escrow holds or has released for this enrolment."""
        held = self.balance(s, core.escrow_of(e.student_id)) + self.balance(s, core.transit_of(e.student_id))
        released = s.scalar(select(func.coalesce(func.sum(EscrowEntry.amount), 0)).where(
            EscrowEntry.enrolment_id == e.id, EscrowEntry.kind == "release")) or 0  # fmt: skip
        return max(0, e.fee_fen - held - released)

    def request_payment(self, enrolment_id: int) -> BankInstruction:
        """Ask the bank to collect what is still owed into escrow (the student's "pay" button)."""
        with self._sf() as s, s.begin():
            e = s.get(Enrolment, enrolment_id)
            if e is None or e.status != ENROLMENT_ACTIVE:
                raise EscrowRefused("not_active", "no active enrolment")
            pending = s.scalar(select(BankInstruction).where(
                BankInstruction.enrolment_id == e.id, BankInstruction.kind == "payment",
                BankInstruction.status.in_([S.READY, S.SENT])))  # fmt: skip
            if pending is not None:
                return pending
            amount = self.outstanding(s, e)
            if amount <= 0:
                raise EscrowRefused("nothing_to_pay", "the fee is paid")
            n = s.scalar(select(func.count()).where(BankInstruction.enrolment_id == e.id,
                                                    BankInstruction.kind == "payment")) or 0  # fmt: skip
            ins = self._instruction(s, f"pay:{e.id}:{n + 1}", "payment", e, amount, S.READY)
        self.send(ins.id)
        return ins

    def withdraw(self, enrolment_id: int, reason: str, *, transfer: bool = False) -> BankInstruction | None:
        """End an enrolment (withdrawal or transfer): releases not yet funded are cancelled, what escrow holds goes
        back to the student (releases already in transit complete: the exam side accepted those parts)."""
        from server.models import ENROLMENT_TRANSFERRED, ENROLMENT_WITHDRAWN

        with self._sf() as s, s.begin():
            e = s.get(Enrolment, enrolment_id)
            if e is None or e.status != ENROLMENT_ACTIVE:
                raise EscrowRefused("not_active", "no active enrolment")
            e.status = ENROLMENT_TRANSFERRED if transfer else ENROLMENT_WITHDRAWN
            e.ended_at, e.end_reason = self._clock(), reason[:500]
            for ins in s.scalars(select(BankInstruction).where(BankInstruction.enrolment_id == e.id,
                                                               BankInstruction.status == S.WAITING_FUNDS)):  # fmt: skip
                ins.status, ins.updated_at = S.CANCELLED, self._clock()
            refund = self._refund_leftover(s, e)
        if refund is not None:
            self.send(refund.id)
        return refund

    # ------------------------------------------------------------------------------------------ instructions
    def _instruction(self, s: Session, key: str, kind: str, e: Enrolment, amount: int, status: str,
                     **extra: Any) -> BankInstruction:  # fmt: skip
        now = self._clock()
        ins = BankInstruction(key=key, kind=kind, enrolment_id=e.id, student_id=e.student_id, school_id=e.school_id,
                              amount=amount, attempt=1, status=status, next_attempt_at=now, created_at=now,
                              updated_at=now, **extra)  # fmt: skip
        s.add(ins)
        s.flush()
        return ins

    def bank_key(self, ins: BankInstruction) -> str:
        """The idempotency key the bank sees: one per attempt (a failed transfer is tried again under a new one)."""
        return ins.key if ins.attempt == 1 else f"{ins.key}#{ins.attempt}"

    def _try_reserve(self, s: Session, ins: BankInstruction) -> bool:
        if ins.status != S.WAITING_FUNDS or self.balance(s, core.escrow_of(ins.student_id)) < ins.amount:
            return False
        self.post(s, core.reserve(ins.student_id, ins.amount, self.bank_key(ins)), student_id=ins.student_id,
                  enrolment_id=ins.enrolment_id, school_id=ins.school_id, event=ins.event,
                  instruction_key=ins.key, notice_id=ins.notice_id, records_digest=ins.records_digest)  # fmt: skip
        self._step(ins, core.Step.RESERVE)
        return True

    def _step(self, ins: BankInstruction, step: core.Step) -> bool:
        nxt = core.next_status(ins.status, step)
        if nxt is None:
            return False
        ins.status, ins.updated_at = nxt.value, self._clock()
        return True

    def _refund_leftover(self, s: Session, e: Enrolment) -> BankInstruction | None:
        held = self.balance(s, core.escrow_of(e.student_id))
        if held <= 0 or e.status == ENROLMENT_ACTIVE:
            return None
        n = s.scalar(select(func.count()).where(BankInstruction.enrolment_id == e.id,
                                                BankInstruction.kind == "refund")) or 0  # fmt: skip
        ins = self._instruction(s, f"refund:{e.id}:{n + 1}", "refund", e, held, S.WAITING_FUNDS)
        self._try_reserve(s, ins)
        log.info("refund of %d fen to %s (enrolment %d %s)", held, e.student_id, e.id, e.status)
        return ins

    def _after_funds(self, s: Session, student: str) -> None:
        """Money reached a student's escrow: confirm the enrolment, fund waiting releases, refund a withdrawn one."""
        for e in s.scalars(select(Enrolment).where(Enrolment.student_id == student).order_by(Enrolment.id)):
            if e.status == ENROLMENT_ACTIVE:
                if e.confirmed_at is None and self.outstanding(s, e) == 0:
                    e.confirmed_at = self._clock()
                    self._decide_release(s, e, "enrolment_confirmed", None)
            else:
                self._refund_leftover(s, e)
        for ins in s.scalars(select(BankInstruction).where(BankInstruction.student_id == student,
                                                           BankInstruction.status == S.WAITING_FUNDS)
                             .order_by(BankInstruction.id)):  # fmt: skip
            self._try_reserve(s, ins)

    def _decide_release(self, s: Session, e: Enrolment, event: str, review: StageReview | None) -> None:
        amount = int(e.allocation.get(event, 0))
        key = f"release:{e.id}:{event}"
        if amount <= 0 or s.scalar(select(BankInstruction.id).where(BankInstruction.key == key)) is not None:
            return
        notice = review.notice if review is not None else {}
        ins = self._instruction(s, key, "release", e, amount, S.WAITING_FUNDS, event=event,
                                notice_id=review.notice_id if review else None,
                                records_digest=notice.get("records_digest"))  # fmt: skip
        self._try_reserve(s, ins)
        log.info("release %s: %d fen to %s%s", key, amount, e.school_id,
                 f" (stage review {review.notice_id})" if review else "")  # fmt: skip

    def release_accepted_reviews(self) -> int:
        """Decide a release for every stage review the exam side accepted since the student's enrolment began
        (idempotent: one instruction per enrolment and event)."""
        made = 0
        with self._sf() as s, s.begin():
            rows = s.execute(select(StageReview, Enrolment).join(Enrolment, Enrolment.student_id
                                                                 == StageReview.student_id)
                             .where(StageReview.status == REVIEW_ACCEPTED, Enrolment.status == ENROLMENT_ACTIVE,
                                    StageReview.updated_at >= Enrolment.created_at)).all()  # fmt: skip
            for review, e in rows:
                event = core.release_event(review.part)
                key = f"release:{e.id}:{event}"
                if int(e.allocation.get(event, 0)) > 0 and s.scalar(
                        select(BankInstruction.id).where(BankInstruction.key == key)) is None:  # fmt: skip
                    self._decide_release(s, e, event, review)
                    made += 1
        return made

    def send(self, instruction_id: int) -> None:
        """Send one ready instruction to the bank (no transaction open during the call)."""
        with self._sf() as s:
            ins = s.get(BankInstruction, instruction_id)
            if ins is None or ins.status not in (S.READY, S.SENT):
                return
            key, kind, amount, student, school = self.bank_key(ins), ins.kind, ins.amount, ins.student_id, ins.school_id
        try:
            if kind == "payment":
                txn = self.bank.collect(key, student, amount)
            elif kind == "release":
                txn = self.bank.transfer(key, escrow_account(student), school_account(school), amount)
            else:
                txn = self.bank.transfer(key, escrow_account(student), card_account(student), amount)
            error: str | None = None
        except BankUnavailable as exc:
            txn, error = None, str(exc)
        except BankRefused as exc:
            txn, error = None, f"refused: {exc}"
        with self._sf() as s, s.begin():
            ins = s.get(BankInstruction, instruction_id)
            if ins is None:
                return
            now = self._clock()
            if error is None:
                self._step(ins, core.Step.SEND)
                ins.bank_txn = ins.bank_txn or txn
                ins.last_error = None
                ins.next_attempt_at = now + timedelta(seconds=RETRY_MAX_SECONDS)  # a lost callback: ask again later
            else:
                delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** min(ins.attempt + 4, 16))
                ins.last_error, ins.next_attempt_at, ins.updated_at = error[:500], now + timedelta(seconds=delay), now
                log.info("bank instruction %s: %s (retry in %.0fs)", key, error, delay)

    def send_due(self) -> int:
        now = self._clock()
        with self._sf() as s:
            ids = list(s.scalars(select(BankInstruction.id).where(BankInstruction.status.in_([S.READY, S.SENT]),
                                                                  BankInstruction.next_attempt_at <= now)
                                 .order_by(BankInstruction.id).limit(BATCH_SIZE)))  # fmt: skip
        for i in ids:
            self.send(i)
        return len(ids)

    def fund_waiting(self) -> None:
        with self._sf() as s, s.begin():
            for student in set(s.scalars(select(BankInstruction.student_id).where(
                    BankInstruction.status == S.WAITING_FUNDS))):  # fmt: skip
                self._after_funds(s, student)

    def run_once(self) -> None:
        """One worker pass: releases for newly accepted reviews, funding of waiting ones, due bank calls."""
        self.release_accepted_reviews()
        self.fund_waiting()
        self.send_due()

    # ------------------------------------------------------------------------------------------ callbacks
    def on_callback(self, cb: BankCallback) -> str:
        """Apply one bank callback once; the outcome: applied | duplicate | ignored_stale | unmatched."""
        with self._sf() as s, s.begin():
            if s.get(BankEvent, cb.event_id) is not None:
                return "duplicate"
            outcome = self._apply(s, cb)
            s.add(BankEvent(event_id=cb.event_id, type=cb.type, ref=cb.ref, txn_id=cb.txn_id, amount=cb.amount,
                            outcome=outcome, body=cb.body, received_at=self._clock()))  # fmt: skip
        log.info("bank callback %s %s %s: %s", cb.event_id, cb.type, cb.ref, outcome)
        return outcome

    def _apply(self, s: Session, cb: BankCallback) -> str:
        ins = None
        if cb.ref:
            base = cb.ref.split("#", 1)[0]
            ins = s.scalar(select(BankInstruction).where(BankInstruction.key == base).with_for_update())
            if ins is not None and self.bank_key(ins) != cb.ref:
                return "ignored_stale"  # a callback about an earlier attempt
        if cb.type == "payment.settled":
            student = student_of_escrow(cb.account)
            if student is None or s.get(Student, student) is None:
                return "unmatched"
            enrolment = ins.enrolment_id if ins is not None else None
            posted = self.post(s, core.payment(student, cb.amount, cb.txn_id), student_id=student,
                               enrolment_id=enrolment, bank_txn=cb.txn_id, instruction_key=cb.ref,
                               detail={"bank_event": cb.event_id})  # fmt: skip
            if ins is not None:
                self._step(ins, core.Step.SETTLED)
                ins.bank_txn = cb.txn_id
            self._after_funds(s, student)
            return "applied" if posted else "duplicate"
        if ins is None or ins.kind == "payment":
            return "unmatched"
        if cb.amount != ins.amount:
            return "unmatched"
        if cb.type == "transfer.settled":
            if not self._step(ins, core.Step.SETTLED):
                return "ignored_stale"
            make = core.release if ins.kind == "release" else None
            entry = (make(ins.student_id, ins.school_id, ins.amount, self.bank_key(ins)) if make is not None
                     else core.refund(ins.student_id, ins.amount, self.bank_key(ins)))  # fmt: skip
            ins.bank_txn = cb.txn_id
            self.post(s, entry, student_id=ins.student_id, enrolment_id=ins.enrolment_id, school_id=ins.school_id,
                      event=ins.event, instruction_key=ins.key, notice_id=ins.notice_id,
                      records_digest=ins.records_digest, bank_txn=cb.txn_id,
                      detail={"bank_event": cb.event_id})  # fmt: skip
            return "applied"
        if not self._step(ins, core.Step.FAILED):
            return "ignored_stale"
        self.post(s, core.unreserve(ins.student_id, ins.amount, self.bank_key(ins)), student_id=ins.student_id,
                  enrolment_id=ins.enrolment_id, instruction_key=ins.key, detail={"reason": cb.reason})  # fmt: skip
        ins.last_error = f"bank: {cb.reason or 'failed'}"
        ins.attempt += 1
        ins.status = S.WAITING_FUNDS.value  # tried again under a new key when escrow holds the amount
        return "applied"

    # ------------------------------------------------------------------------------------------ reconciliation
    def reconcile(self, day: date) -> Reconciliation:
        """Compare the ledger's bank-settled entries of Beijing ``day`` with the bank's statement for it, check the
        ledger's own invariants, and store the report with every difference."""
        try:
            lines = self.bank.statement(day.isoformat())
            unavailable: str | None = None
        except BankUnavailable as exc:  # reported as a difference: the day is not reconciled
            lines, unavailable = [], str(exc)
        start = datetime.combine(day, time(0), BEIJING)
        end = start + timedelta(days=1)
        with self._sf() as s, s.begin():
            moved = select(EscrowEntry).where(EscrowEntry.bank_txn.is_not(None),
                                              EscrowEntry.kind.in_(["payment", "release", "refund"]))  # fmt: skip
            ours = {e.bank_txn: e for e in s.scalars(moved) if e.bank_txn}
            diffs: list[dict[str, Any]] = []
            if unavailable is not None:
                diffs.append({"kind": "statement_unavailable", "detail": unavailable})
            seen: set[str] = set()
            for line in lines:
                seen.add(line.txn_id)
                e = ours.get(line.txn_id)
                if e is None:
                    diffs.append({"kind": "missing_in_ledger", "txn_id": line.txn_id, "ref": line.ref,
                                  "amount": line.amount, "type": line.type})  # fmt: skip
                elif e.amount != line.amount:
                    diffs.append({"kind": "amount_differs", "txn_id": line.txn_id, "ledger": e.amount,
                                  "bank": line.amount})  # fmt: skip
            in_day = [e for e in ours.values() if start <= e.at < end]
            for e in in_day if unavailable is None else []:
                if e.bank_txn not in seen:
                    diffs.append({"kind": "missing_at_bank", "txn_id": e.bank_txn, "key": e.key, "amount": e.amount})
            diffs += [{"kind": "ledger_invariant", "detail": v} for v in self.check(s)]
            report = Reconciliation(day=day.isoformat(), statement_lines=len(lines), ledger_lines=len(in_day),
                                    differences=diffs, ok=not diffs, at=self._clock())  # fmt: skip
            s.add(report)
        log.log(logging.INFO if report.ok else logging.WARNING, "reconciliation %s: %d differences", day, len(diffs))
        return report

    def check(self, s: Session) -> list[str]:
        """The ledger's invariants over the whole database (core.violations on stored balances and legs)."""
        balances = {a.id: a.balance for a in s.scalars(select(EscrowAccount))}
        out = core.violations(balances)
        derived = dict(s.execute(select(EscrowLeg.account_id, func.sum(EscrowLeg.amount)).group_by(
            EscrowLeg.account_id)).all())  # fmt: skip
        out += [f"{a}: balance {b} but legs sum to {derived.get(a, 0)}" for a, b in sorted(balances.items())
                if int(derived.get(a, 0)) != b]  # fmt: skip
        unbalanced = s.scalars(select(EscrowLeg.entry_id).group_by(EscrowLeg.entry_id).having(
            func.sum(EscrowLeg.amount) != 0)).all()  # fmt: skip
        out += [f"entry {i} does not balance" for i in unbalanced]
        return out

