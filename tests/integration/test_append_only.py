"""The decision log and the escrow journal only grow: the database refuses UPDATE and DELETE on them (SQLite and
PostgreSQL), and an edit made by someone who drops the trigger first still shows in the decision log's hash chain."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from server import db
from server.models import EscrowAccount, EscrowEntry, EscrowLeg, ReviewDecision
from server.review import append_decision, verify_log

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _logged(url: str) -> db.SessionFactory:
    db.upgrade(url)
    sf = db.make_session_factory(db.make_engine(url))
    with sf() as s, s.begin():
        for n in range(2):
            append_decision(s, target_kind="session", target=f"T{n:015d}/S{n}", decision="pass", operator="reg-1",
                            reason="seen on the video", at=AT)  # fmt: skip
    return sf


@pytest.mark.parametrize("statement", ["update", "delete"])
def test_the_database_refuses_to_rewrite_a_decision(db_url: str, statement: str) -> None:
    sf = _logged(db_url)
    change = (update(ReviewDecision).where(ReviewDecision.id == 1).values(decision="fail")
              if statement == "update" else delete(ReviewDecision).where(ReviewDecision.id == 1))  # fmt: skip
    with sf() as s, pytest.raises(DBAPIError, match="append-only"):
        s.execute(change)
    with sf() as s:
        assert [d.decision for d in s.scalars(select(ReviewDecision).order_by(ReviewDecision.id))] == ["pass", "pass"]
        assert verify_log(s)["ok"]


@pytest.mark.parametrize("table", ["escrow_entries", "escrow_legs"])
@pytest.mark.parametrize("statement", ["UPDATE {table} SET amount = amount * 2", "DELETE FROM {table}"])
def test_the_escrow_journal_cannot_be_rewritten_either(db_url: str, table: str, statement: str) -> None:
    sf = _logged(db_url)
    with sf() as s, s.begin():  # one posted entry: 100 fen from outside into a student's escrow
        for account, kind in (("external:P1", "external"), ("escrow:P1", "escrow")):
            s.add(EscrowAccount(id=account, kind=kind, owner="P1", balance=0, updated_at=AT))
        s.flush()
        entry = EscrowEntry(key="pay:1", kind="payment", amount=100, student_id="P1", at=AT, detail={})
        s.add(entry)
        s.flush()
        s.add_all([EscrowLeg(entry_id=entry.id, account_id="external:P1", amount=-100),
                   EscrowLeg(entry_id=entry.id, account_id="escrow:P1", amount=100)])  # fmt: skip
    with sf() as s, pytest.raises(DBAPIError, match="append-only"):
        s.execute(text(statement.format(table=table)))
    with sf() as s:
        assert s.scalar(text(f"SELECT count(*) FROM {table}")) >= 1
        assert s.scalar(select(EscrowEntry.amount)) == 100


def test_an_edit_behind_the_triggers_back_still_breaks_the_chain(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/server.db"
    sf = _logged(url)
    with sf() as s, s.begin():
        s.execute(text("DROP TRIGGER review_decisions_no_update"))  # what only the database's owner can do
        s.execute(update(ReviewDecision).where(ReviewDecision.id == 1).values(reason="edited afterwards"))
    with sf() as s:
        assert verify_log(s) == {"entries": 1, "ok": False, "first_bad": 1}
