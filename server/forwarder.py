"""The stage-review forwarder: drains the ``stage_reviews`` outbox to the exam system, with retries.

The outbox lives in the database, so a restart loses nothing: a notice stays ``pending`` until the exam side answered.
Retryable failures (:class:`~server.exam_client.ExamUnavailable`) back off exponentially; a refusal
(:class:`~server.exam_client.ExamRefused`: the notice itself is malformed) or a rejection is final and kept for the
operator. A rejection sends the records it names (all of the notice's when it names none) back to review: the ledger
reads rejected notices when it judges (:meth:`server.ledger.Ledger.after_exam_reply`, called after the reply is
committed and again for every rejected notice when the forwarder starts, so a crash between the two loses nothing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select

from server.clock import Clock
from server.db import SessionFactory
from server.exam_client import ExamRefused, ExamReply, ExamUnavailable, StageReviewNotice, next_retry_delay
from server.models import REVIEW_ACCEPTED, REVIEW_PENDING, REVIEW_REJECTED, StageReview

log = logging.getLogger(__name__)

#: How often the loop looks for due notices when idle.
POLL_SECONDS = 1.0
#: Notices taken per pass (the rest wait for the next pass).
BATCH_SIZE = 20
#: A claimed notice is not taken again before this (longer than any exam call's timeout): another forwarder, or
#: this one after a crash mid-call, retries it only then.
CLAIM_LEASE = timedelta(seconds=60)


class ExamPort(Protocol):
    def submit(self, notice: StageReviewNotice) -> ExamReply: ...


def notice_from_json(d: dict[str, Any]) -> StageReviewNotice:
    return StageReviewNotice.create(
        notice_id=d["notice_id"],
        student=d["student"],
        school=d["school"],
        licence_class=d["licence_class"],
        part=int(d["part"]),
        valid_minutes=int(d["valid_minutes"]),
        xueshi=int(d["xueshi"]),
        records=d["records"],
        submitted_at=datetime.fromisoformat(d["submitted_at"]),
        mileage_m=int(d.get("mileage_m") or 0),
    )


class Forwarder:
    def __init__(
        self,
        session_factory: SessionFactory,
        exam: ExamPort,
        clock: Clock,
        *,
        poll_seconds: float = POLL_SECONDS,
        after_rejection: Callable[[list[str]], object] | None = None,
    ) -> None:
        self._sf = session_factory
        self._exam = exam
        self._clock = clock
        self.poll_seconds = poll_seconds
        self._after_rejection = after_rejection  # called with the notice ids just rejected (ledger re-judging)

    def replay_rejections(self) -> int:
        """Hand every rejected notice to ``after_rejection`` again (at start: a crash may have cut the first call)."""
        if self._after_rejection is None:
            return 0
        with self._sf() as s:
            ids = list(s.scalars(select(StageReview.notice_id).where(StageReview.status == REVIEW_REJECTED)))
        if ids:
            self._after_rejection(ids)
        return len(ids)

    def run_once(self) -> int:
        """Submit every due notice once; returns how many were tried."""
        now = self._clock()
        with self._sf() as s:
            ids = list(
                s.scalars(
                    select(StageReview.id)
                    .where(StageReview.status == REVIEW_PENDING, StageReview.next_attempt_at <= now)
                    .order_by(StageReview.next_attempt_at, StageReview.id)
                    .limit(BATCH_SIZE)
                )
            )
        for review_id in ids:
            self._submit_one(review_id)
        return len(ids)

    def _submit_one(self, review_id: int) -> None:
        claimed = self._claim(review_id)
        if claimed is None:
            return
        notice_id, attempts, notice = claimed
        # No transaction is open during the HTTP call: a slow exam side must never hold up ingest's writes.
        try:
            reply: ExamReply | None = self._exam.submit(notice_from_json(notice))
            error: Exception | None = None
        except (ExamUnavailable, ExamRefused) as exc:
            reply, error = None, exc
        rejected = False
        with self._sf() as s, s.begin():
            review = s.get(StageReview, review_id)
            if review is None or review.status != REVIEW_PENDING:
                return
            now = self._clock()
            review.updated_at = now
            if isinstance(error, ExamUnavailable):
                delay = next_retry_delay(attempts - 1)
                review.next_attempt_at = now + timedelta(seconds=delay)
                review.last_error = str(error) or type(error).__name__
                log.info("stage review %s: exam side unavailable (%s), retry in %.0fs", notice_id, error, delay)
            elif isinstance(error, ExamRefused):
                review.status = REVIEW_REJECTED
                review.last_error = str(error)
                review.reply = {"status": "refused", "status_code": error.status_code, "reasons": list(error.reasons)}
                log.warning("stage review %s refused by the exam side: %s", notice_id, error)
            elif reply is not None:
                review.status = REVIEW_ACCEPTED if reply.accepted else REVIEW_REJECTED
                review.reply = {"status": reply.status, "reasons": list(reply.reasons),
                                "rejected_records": dict(sorted(reply.rejected_records.items())),
                                "answered_at": now.isoformat()}  # fmt: skip
                review.last_error = None
                rejected = not reply.accepted
                log.info("stage review %s: %s %s", notice_id, reply.status, ",".join(reply.reasons))
        if rejected and self._after_rejection is not None:
            self._after_rejection([notice_id])

    def _claim(self, review_id: int) -> tuple[str, int, dict[str, Any]] | None:
        """Take a due notice for one attempt: count it and lease it, in a short transaction of its own.

        A crash after the claim leaves the notice pending; it is tried again when the lease ends, and the exam side
        answers a resent notice id as it did the first time (it is idempotent on the notice id).
        """
        with self._sf() as s, s.begin():
            # Row lock (PostgreSQL) so that two forwarders never claim the same notice; SQLite's BEGIN IMMEDIATE
            # serialises writers already.
            review = s.scalar(select(StageReview).where(StageReview.id == review_id).with_for_update(skip_locked=True))
            now = self._clock()
            if review is None or review.status != REVIEW_PENDING or review.next_attempt_at > now:
                return None
            review.attempts += 1
            review.updated_at = now
            review.next_attempt_at = now + CLAIM_LEASE
            return review.notice_id, review.attempts, dict(review.notice)

    def run(self, stop: threading.Event) -> None:
        log.info("forwarder started")
        try:
            self.replay_rejections()
        except Exception:  # noqa: BLE001 - re-judging is retried at the next start; forwarding must go on
            log.exception("re-judging rejected stage reviews failed")
        while not stop.is_set():
            try:
                tried = self.run_once()
            except Exception:  # noqa: BLE001 - the loop must survive a database hiccup; it retries next pass
                log.exception("forwarder pass failed")
                tried = 0
            if not tried:
                stop.wait(self.poll_seconds)
        log.info("forwarder stopped")
