"""Stage reviews end to end against the real exam simulator over HTTP: signed by the server, with mileage; a rejection
sends the records it names back to review, blocks the part, and a new notice goes only after an operator decided them.
Nothing is lost when the process dies between the exam side's answer and the re-judging."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from test_exam_sim import exam_sim
from test_fraud_scenarios import POLICY, enrol, feed, fresh_db, in_arrival_order

from firmware_protocols import envelope
from server.exam_client import ExamClient, NoticeSigner
from server.forwarder import Forwarder
from server.ledger import Ledger
from server.models import Minute, ReviewItem, StageReview, TrainingSession
from server.review import append_decision
from simulators.fraud import clean_fleet

#: Part 2 needs one 学时 of 30 minutes: each clean session (40 minutes) completes it.
SMALL = replace(POLICY, part_hours={"C1": {1: 1, 2: 1, 3: 1, 4: 1}}, minutes_per_xueshi=30)


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


def exam_side(signer: NoticeSigner) -> AbstractContextManager[str]:
    """The exam simulator that checks the server's signature, on a free port."""
    return exam_sim(None, envelope.public_key_from_pem(signer.public_pem))


def world(tmp_path: Path) -> tuple[Any, Ledger, Clock, str]:
    """One honest car and student (two sessions), stored and judged: part 2 complete, its notice in the outbox."""
    scenario = clean_fleet(cars=1)
    sf = fresh_db(tmp_path / "server.db")
    enrol(sf, scenario)
    feed(sf, in_arrival_order(scenario.uploads), SMALL)
    clock = Clock()
    return sf, Ledger(sf, SMALL, clock), clock, scenario.students[0]


def reviews(sf: Any) -> list[tuple[str, str]]:
    with sf() as s:
        return [(r.notice_id, r.status) for r in s.scalars(select(StageReview).order_by(StageReview.id))]


def test_notice_carries_mileage_and_the_server_signature(tmp_path: Path) -> None:
    sf, _ledger, clock, student = world(tmp_path)
    signer = NoticeSigner.from_file(tmp_path / "notice.key")
    with exam_side(signer) as url, ExamClient(url, signer=signer) as exam:
        assert Forwarder(sf, exam, clock).run_once() == 1
        stored = httpx.get(f"{url}/api/v1/stage-reviews").json()
    assert reviews(sf) == [(f"{student}-2", "accepted")]
    sent = stored[0]["notice"]
    with sf() as s:  # the notice went when the part completed: the minutes valid then, and the metres they drove
        minutes = list(s.scalars(select(Minute).where(Minute.record_no.in_(sent["records"]))))
    assert sent["valid_minutes"] == len(sent["records"]) == len(minutes) >= 30
    assert all(m.valid and m.student_id == student and m.part == 2 for m in minutes)
    assert sent["mileage_m"] == sum(int(m.facts["distance_m"]) for m in minutes) > 0
    jws = envelope.parse(sent["signature"], "jiapei-stage-review+jws")
    envelope.verify(jws, envelope.public_key_from_pem(signer.public_pem))
    assert jws.payload["records_digest"] == sent["records_digest"] and jws.kid == signer.key_id


def test_a_rejection_sends_the_records_back_to_review_until_an_operator_decides(tmp_path: Path) -> None:
    sf, ledger, clock, student = world(tmp_path)
    signer = NoticeSigner.from_file(tmp_path / "notice.key")
    with exam_side(signer) as url, ExamClient(url, signer=signer) as exam:
        httpx.post(f"{url}/admin/faults", json={"reject_next": 1, "reject_reason": "photo_check_failed"})
        forwarder = Forwarder(sf, exam, clock, after_rejection=ledger.after_exam_reply)
        assert forwarder.run_once() == 1
        assert reviews(sf) == [(f"{student}-2", "rejected")]
        with sf() as s:
            review = s.scalar(select(StageReview))
            assert review is not None and review.reply is not None
            named = sorted(review.reply["rejected_records"])
            assert len(named) == 3 and set(review.reply["rejected_records"].values()) == {"photo_check_failed"}
            back = {m.record_no: (m.valid, m.status, m.reasons) for m in s.scalars(select(Minute))
                    if "exam_rejected" in m.reasons}  # fmt: skip
            assert sorted(back) == named
            assert all(v == (False, "under_review", ["exam_rejected"]) for v in back.values())
            items = list(s.scalars(select(ReviewItem).where(ReviewItem.status == "open")))
            assert len(items) == 1 and items[0].reasons == ["exam_rejected"] and items[0].records == named
            session = s.scalar(select(TrainingSession).join(Minute, Minute.session_id == TrainingSession.id)
                               .where(Minute.record_no == named[0]))  # fmt: skip
            assert session is not None
            target = f"{session.terminal_id}/{session.session}"
        # Nothing new goes while the records wait for review, however often the ledger runs.
        ledger.recompute_students([student])
        assert forwarder.run_once() == 0 and reviews(sf) == [(f"{student}-2", "rejected")]

        # The operator checks the photos and passes the session: the part goes to the exam side again, new id.
        clock.t += timedelta(hours=2)
        with sf() as s, s.begin():
            append_decision(s, target_kind="session", target=target, decision="pass", operator="regulator-1",
                            reason="photos checked by hand: the student is the one enrolled", at=clock.t)  # fmt: skip
        ledger.recompute_students(ledger.rejudge_sessions({session.id}))
        with sf() as s:
            assert s.scalar(select(ReviewItem.status)) == "passed"
            statuses = {m.status for m in s.scalars(select(Minute).where(Minute.record_no.in_(named)))}
            assert statuses == {"manual_passed"}
        assert forwarder.run_once() == 1
        assert reviews(sf) == [(f"{student}-2", "rejected"), (f"{student}-2-2", "accepted")]
        assert httpx.get(f"{url}/api/v1/eligibility/{student}").json()["parts_accepted"] == [2]


def test_a_decision_made_before_the_rejection_does_not_release_the_records(tmp_path: Path) -> None:
    sf, ledger, clock, student = world(tmp_path)
    with sf() as s:
        session = s.scalar(select(TrainingSession).order_by(TrainingSession.id))
        assert session is not None
        target, sid = f"{session.terminal_id}/{session.session}", session.id
    with sf() as s, s.begin():  # an old decision on the session, long before the exam side answers
        append_decision(s, target_kind="session", target=target, decision="pass", operator="regulator-1",
                        reason="checked earlier", at=clock.t - timedelta(days=1))  # fmt: skip
    signer = NoticeSigner.from_file(tmp_path / "notice.key")
    with exam_side(signer) as url, ExamClient(url, signer=signer) as exam:
        httpx.post(f"{url}/admin/faults", json={"reject_next": 1})
        Forwarder(sf, exam, clock, after_rejection=ledger.after_exam_reply).run_once()
    ledger.recompute_students(ledger.rejudge_sessions({sid}))
    with sf() as s:
        flagged = list(s.scalars(select(Minute).where(Minute.status == "under_review")))
        assert len(flagged) == 3 and all(m.reasons == ["exam_rejected"] for m in flagged)
    assert reviews(sf) == [(f"{student}-2", "rejected")]


def test_a_crash_between_the_answer_and_the_re_judging_loses_nothing(tmp_path: Path) -> None:
    sf, ledger, clock, student = world(tmp_path)
    signer = NoticeSigner.from_file(tmp_path / "notice.key")
    with exam_side(signer) as url, ExamClient(url, signer=signer) as exam:
        httpx.post(f"{url}/admin/faults", json={"reject_next": 1})

        def crash(_ids: list[str]) -> None:
            raise SystemExit("power cut after the reply was committed")

        try:
            Forwarder(sf, exam, clock, after_rejection=crash).run_once()
        except SystemExit:
            pass
        assert reviews(sf) == [(f"{student}-2", "rejected")]
        with sf() as s:  # the reply is stored, the minutes not yet judged again
            assert not any("exam_rejected" in m.reasons for m in s.scalars(select(Minute)))
        # Even before the restart re-judges, the rejected part is not sent again.
        ledger.recompute_students([student])
        assert reviews(sf) == [(f"{student}-2", "rejected")]
        # The restarted forwarder hands every rejected notice to the ledger first.
        restarted = Forwarder(sf, exam, clock, after_rejection=ledger.after_exam_reply)
        assert restarted.replay_rejections() == 1
    with sf() as s:
        assert len([m for m in s.scalars(select(Minute)) if "exam_rejected" in m.reasons]) == 3
        assert [i.reasons for i in s.scalars(select(ReviewItem))] == [["exam_rejected"]]


def test_an_accepted_minute_that_flips_opens_an_item_that_closes_when_it_is_valid_again(tmp_path: Path) -> None:
    sf, ledger, clock, student = world(tmp_path)
    signer = NoticeSigner.from_file(tmp_path / "notice.key")
    with exam_side(signer) as url, ExamClient(url, signer=signer) as exam:
        Forwarder(sf, exam, clock).run_once()
    assert reviews(sf) == [(f"{student}-2", "accepted")]
    with sf() as s:
        review = s.scalar(select(StageReview))
        assert review is not None
        record = review.notice["records"][0]
        sid = s.scalar(select(Minute.session_id).where(Minute.record_no == record))
    assert sid is not None

    def decide(decision: str) -> list[tuple[str, list[str]]]:
        clock.t += timedelta(minutes=5)
        with sf() as s, s.begin():
            append_decision(s, target_kind="minute", target=record, decision=decision, operator="regulator-1",
                            reason=f"{decision}: checked the video again", at=clock.t)  # fmt: skip
        ledger.recompute_students(ledger.rejudge_sessions({sid}))
        with sf() as s:
            return [(i.status, i.reasons[:1]) for i in s.scalars(select(ReviewItem).where(ReviewItem.kind == "minute"))]

    assert decide("fail") == [("open", ["accepted_minute_flipped"])]  # the exam side holds it: never silently
    assert decide("pass") == [("resolved", ["accepted_minute_flipped"])]
    assert decide("fail") == [("open", ["accepted_minute_flipped"])]  # the same item again, not a second one
