"""The escrow ledger's invariants under random event orders and duplicates (hypothesis).

Invariants checked after every step and at the end:
1. every entry balances and the balances sum to zero (double entry), stored balances equal the sum of their legs;
2. no account but ``external`` is ever negative (the core refuses, and the database's CHECK would);
3. per student: paid = escrow + in transit + released + refunded (no fen created or lost);
4. a school receives at most the fee, each release event at most once, and only for an accepted stage review or
   the confirmed enrolment;
5. once every callback has arrived (in whatever order, however often): nothing is left in transit, and a student
   who stayed and whose parts 1-3 were accepted has had the whole fee released.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from platform_world import FakeBank, seed_school
from sqlalchemy import func, select

from server import db
from server.escrow import core
from server.escrow.service import EscrowRefused, EscrowService
from server.models import BankInstruction, Enrolment, EscrowAccount, EscrowEntry, StageReview, Student
from server.policy import load_builtin_policy

SCHOOL = "3711020000000001"
STUDENTS = ("3711020000000101", "3711020000000102")
PRICE = 399_999  # fen: an odd price, so the 10/30/30/30 split has remainders
POLICY = load_builtin_policy("national-2016")


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ledger") / "template.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def fresh(template: Path, tmp_path: Path) -> Iterator[Any]:
    yield template


def _world(template: Path, directory: Path, n: int) -> tuple[Any, Any]:
    import shutil

    path = directory / f"w{n}.db"
    shutil.copy(template, path)
    engine = db.make_engine(f"sqlite:///{path}")
    sf = db.make_session_factory(engine)
    seed_school(sf, school=SCHOOL, name="测试驾校", coach="3711020000000201", terminal="", price_fen=PRICE)
    now = datetime.now(UTC)
    with sf() as s, s.begin():
        for sid in STUDENTS:
            s.add(Student(id=sid, name="学员", school_id=SCHOOL, licence_class="C1", face_template="", created_at=now))
    return sf, engine


def test_allocation_sums_to_the_fee_in_integer_fen() -> None:
    for fee in (1, 7, 99, 100, 399_999, 500_000, 10**9 + 7):
        alloc = POLICY.escrow.allocate(fee)
        assert sum(alloc.values()) == fee and all(type(v) is int and v >= 0 for v in alloc.values())
    assert POLICY.escrow.allocate(500_000) == {"enrolment_confirmed": 50_000, "part_1_accepted": 150_000,
                                               "part_2_accepted": 150_000, "part_3_accepted": 150_000,
                                               "part_4_accepted": 0}  # fmt: skip


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "x"]), st.sampled_from(["a", "b", "c"]),
                          st.integers(1, 1000)), max_size=40))  # fmt: skip
def test_the_core_book_never_goes_negative_and_always_balances(moves: list[tuple[str, str, int]]) -> None:
    book = core.Book()
    accounts = {"a": core.escrow_of("S1"), "b": core.transit_of("S1"), "c": core.school_account("K1"),
                "x": core.payer_of("S1")}  # fmt: skip
    posted = []
    for i, (src, dst, amount) in enumerate(moves):
        if src == dst:
            continue
        entry = core.transfer(f"k{i % 7}", "t", accounts[src], accounts[dst], amount)
        try:
            if book.post(entry):
                posted.append(entry)
        except core.NegativeBalance:
            pass
        assert core.violations(book.balances, posted) == []


def test_unbalanced_or_float_entries_are_refused() -> None:
    with pytest.raises(core.UnbalancedEntry):
        core.Entry("k", "t", (core.Leg("escrow:a", 5), core.Leg("school:b", -4)))
    with pytest.raises(core.UnbalancedEntry):
        core.transfer("k", "t", "escrow:a", "school:b", 1.5)  # type: ignore[arg-type]
    with pytest.raises(core.NegativeBalance):
        core.Book().post(core.transfer("k", "t", "escrow:a", "school:b", 1))


ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("pay"), st.integers(0, 1)),
    st.tuples(st.just("accept"), st.integers(0, 1), st.integers(1, 4)),
    st.tuples(st.just("deliver"), st.integers(0, 50)),  # deliver (and keep) the i-th pending callback: duplicates
    st.tuples(st.just("drop"), st.integers(0, 50)),  # deliver and forget it
    st.tuples(st.just("withdraw"), st.integers(0, 1)),
    st.tuples(st.just("worker"), st.just(0)),
    st.tuples(st.just("fail_next"), st.just(0)),
    st.tuples(st.just("bank_down"), st.booleans()),
), max_size=30)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS, final_order=st.randoms(use_true_random=False))
def test_ledger_invariants_under_random_orders_and_duplicates(fresh: Path, tmp_path: Path, actions: list[Any],
                                                              final_order: Any) -> None:  # fmt: skip
    global _n
    _n += 1
    sf, engine = _world(fresh, tmp_path, _n)
    bank, clock = FakeBank(), Clock()
    svc = EscrowService(sf, POLICY, bank, clock)
    enrolments: dict[int, int] = {}
    withdrawn: set[int] = set()
    with sf() as s, s.begin():
        for i, sid in enumerate(STUDENTS):
            st_row = s.get(Student, sid)
            assert st_row is not None
            enrolments[i] = svc.enrol(s, st_row, SCHOOL).id
    pending: list[Any] = []
    accepted: dict[int, set[int]] = {0: set(), 1: set()}

    def collect() -> None:
        pending.extend(bank.callbacks)
        bank.callbacks.clear()

    for action in actions:
        kind = action[0]
        try:
            if kind == "pay":
                svc.request_payment(enrolments[action[1]])
            elif kind == "accept":
                who, part = action[1], action[2]
                with sf() as s, s.begin():
                    if s.scalar(select(StageReview.id).where(StageReview.notice_id == f"{STUDENTS[who]}-{part}")):
                        continue
                    s.add(StageReview(notice_id=f"{STUDENTS[who]}-{part}", student_id=STUDENTS[who], part=part,
                                      notice={"records_digest": "ab" * 32}, status="accepted",
                                      next_attempt_at=clock(), created_at=clock(), updated_at=clock()))  # fmt: skip
                accepted[who].add(part)
            elif kind in ("deliver", "drop") and pending:
                cb = pending[action[1] % len(pending)]
                svc.on_callback(cb)
                if kind == "drop":
                    pending.remove(cb)
            elif kind == "withdraw":
                svc.withdraw(enrolments[action[1]], "test")
                withdrawn.add(action[1])
            elif kind == "worker":
                svc.run_once()
            elif kind == "fail_next":
                bank.fail_next += 1
            elif kind == "bank_down":
                bank.down = action[1]
        except EscrowRefused:
            pass
        collect()
        check(sf)
    # the end: the bank is up, every callback arrives (shuffled, each twice), the worker runs until quiet
    bank.down, bank.fail_next = False, 0
    for _ in range(6):
        svc.run_once()
        for inst in _due(sf):
            svc.send(inst)
        collect()
        batch = pending * 2
        final_order.shuffle(batch)
        for cb in batch:
            svc.on_callback(cb)
        pending.clear()
        collect()
        check(sf)
    with sf() as s:
        for i, sid in enumerate(STUDENTS):
            assert svc.balance(s, core.transit_of(sid)) == 0
            e = s.get(Enrolment, enrolments[i])
            assert e is not None
            released = s.scalar(select(func.coalesce(func.sum(EscrowEntry.amount), 0)).where(
                EscrowEntry.enrolment_id == e.id, EscrowEntry.kind == "release")) or 0  # fmt: skip
            assert released <= e.fee_fen
            events = list(s.scalars(select(EscrowEntry.event).where(EscrowEntry.enrolment_id == e.id,
                                                                    EscrowEntry.kind == "release")))  # fmt: skip
            assert len(events) == len(set(events))
            for ev in events:
                assert ev == "enrolment_confirmed" or int(ev.split("_")[1]) in accepted[i]
            if i not in withdrawn and e.confirmed_at is not None and accepted[i] >= {1, 2, 3}:
                assert released == e.fee_fen
            if i in withdrawn:
                assert svc.balance(s, core.escrow_of(sid)) == 0  # everything not released went back
    engine.dispose()


_n = 0


def _due(sf: Any) -> list[int]:
    with sf() as s:
        return list(s.scalars(select(BankInstruction.id).where(BankInstruction.status.in_(["ready", "sent"]))))


def check(sf: Any) -> None:
    with sf() as s:
        svc_check = EscrowService(sf, POLICY, FakeBank(), datetime.now).check(s)  # type: ignore[arg-type]
        assert svc_check == []
        for a in s.scalars(select(EscrowAccount)):
            assert a.kind == "external" or a.balance >= 0
        for sid in STUDENTS:
            bal = {a.kind: a.balance for a in s.scalars(select(EscrowAccount).where(EscrowAccount.owner == sid))}
            paid = -bal.get("external", 0)
            released = s.scalar(select(func.coalesce(func.sum(EscrowEntry.amount), 0)).where(
                EscrowEntry.student_id == sid, EscrowEntry.kind == "release")) or 0  # fmt: skip
            assert paid == bal.get("escrow", 0) + bal.get("transit", 0) + released + bal.get("refund", 0)


def test_the_database_refuses_a_negative_balance(template: Path, tmp_path: Path) -> None:
    from sqlalchemy.exc import IntegrityError

    sf, engine = _world(template, tmp_path, 999)
    with pytest.raises(IntegrityError), sf() as s, s.begin():
        s.add(EscrowAccount(id="escrow:X", kind="escrow", owner="X", balance=-1, updated_at=datetime.now(UTC)))
    engine.dispose()


def test_worked_example_one_student_from_enrolment_to_the_last_release(template: Path, tmp_path: Path) -> None:
    """The fee of 399,999 fen: 40,000 + 120,000 + 120,000 + 119,999 released (largest remainder: 10 % is 39,999.9,
    30 % is 119,999.7; the 3 leftover fen go to the largest fractions, enrolment first, then parts 1 and 2), each
    release traced to its stage review; a duplicated and a reordered callback change nothing."""
    sf, engine = _world(template, tmp_path, 1000)
    bank, clock = FakeBank(), Clock()
    svc = EscrowService(sf, POLICY, bank, clock)
    with sf() as s, s.begin():
        st_row = s.get(Student, STUDENTS[0])
        assert st_row is not None
        e_id = svc.enrol(s, st_row, SCHOOL).id
    svc.request_payment(e_id)
    paid = bank.callbacks.pop()
    assert svc.on_callback(paid) == "applied" and svc.on_callback(paid) == "duplicate"
    svc.run_once()  # the enrolment release (10 %) goes out
    for part in (2, 1, 3):  # parts accepted out of order
        with sf() as s, s.begin():
            s.add(StageReview(notice_id=f"{STUDENTS[0]}-{part}", student_id=STUDENTS[0], part=part,
                              notice={"records_digest": f"{part}" * 64}, status="accepted", next_attempt_at=clock(),
                              created_at=clock(), updated_at=clock()))  # fmt: skip
    svc.run_once()
    for cb in reversed(bank.callbacks):  # reordered
        assert svc.on_callback(cb) == "applied"
    with sf() as s:
        rel = {e.event: (e.amount, e.notice_id, e.records_digest) for e in s.scalars(
            select(EscrowEntry).where(EscrowEntry.kind == "release"))}  # fmt: skip
        assert rel == {"enrolment_confirmed": (40_000, None, None),
                       "part_1_accepted": (120_000, f"{STUDENTS[0]}-1", "1" * 64),
                       "part_2_accepted": (120_000, f"{STUDENTS[0]}-2", "2" * 64),
                       "part_3_accepted": (119_999, f"{STUDENTS[0]}-3", "3" * 64)}  # fmt: skip
        assert svc.balance(s, core.escrow_of(STUDENTS[0])) == 0
        assert svc.balance(s, core.school_account(SCHOOL)) == 399_999
        assert svc.check(s) == []
    report = svc.reconcile(clock().astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).date())
    assert report.ok, report.differences
    # a statement line the ledger never heard of (a lost callback) is reported
    bank.txns["stray"] = ("BT999", paid)
    report = svc.reconcile(clock().astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).date())
    assert [d["kind"] for d in report.differences] == ["missing_in_ledger"]
    engine.dispose()


def test_the_reconciliation_runs_once_a_day_by_itself(template: Path, tmp_path: Path) -> None:
    """The platform worker reconciles yesterday (Beijing) once the day has turned, once; not again the same day."""
    from server.models import Reconciliation
    from server.platform import PlatformWorker

    sf, engine = _world(template, tmp_path, 1000)
    bank, clock = FakeBank(), Clock()
    svc = EscrowService(sf, POLICY, bank, clock)
    worker = PlatformWorker(sf, POLICY, clock, escrow=svc)
    worker.run_once()
    worker.run_once()
    with sf() as s:
        days = [r.day for r in s.scalars(select(Reconciliation))]
    yesterday = (clock().astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")) - timedelta(days=1)).date()
    assert days == [yesterday.isoformat()]
    assert worker.reconcile_yesterday() is False
    engine.dispose()
