"""Manual review: the append-only, hash-chained log of operators' decisions, and the overrides it implies.

Each :class:`~server.models.ReviewDecision` row's ``hash`` is SHA-256 over the previous row's hash and its own fields
(canonical JSON), so editing, deleting or reordering a decision breaks every later hash; ``prev_hash`` is unique, so
two operators deciding at once cannot fork the log (the second write fails and is retried). :func:`verify_log`
recomputes the chain. Decisions are never derived data: recomputation reads them and applies them last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import ReviewDecision

GENESIS_HASH = "0" * 64
TARGET_MINUTE = "minute"
TARGET_SESSION = "session"
DECISIONS = ("pass", "fail")


def session_target(terminal: str, session: str) -> str:
    return f"{terminal}/{session}"


def decision_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    body = json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def _fields(d: ReviewDecision) -> dict[str, Any]:
    return {"id": d.id, "target_kind": d.target_kind, "target": d.target, "decision": d.decision, "reason": d.reason,
            "operator": d.operator, "at": d.at.isoformat()}  # fmt: skip


def append_decision(
    s: Session, *, target_kind: str, target: str, decision: str, reason: str, operator: str, at: datetime
) -> ReviewDecision:
    """Append one decision to the log (inside the caller's transaction)."""
    if target_kind not in (TARGET_MINUTE, TARGET_SESSION):
        raise ValueError(f"target kind must be minute or session, got {target_kind!r}")
    if decision not in DECISIONS:
        raise ValueError(f"decision must be pass or fail, got {decision!r}")
    if not reason.strip():
        raise ValueError("a manual decision needs a reason")
    last = s.scalar(select(ReviewDecision).order_by(ReviewDecision.id.desc()).limit(1))
    prev = last.hash if last is not None else GENESIS_HASH
    next_id = (last.id if last is not None else 0) + 1
    row = ReviewDecision(id=next_id, target_kind=target_kind, target=target, decision=decision, reason=reason,
                         operator=operator, at=at.replace(microsecond=0), prev_hash=prev, hash="")  # fmt: skip
    row.hash = decision_hash(prev, _fields(row))
    s.add(row)
    s.flush()
    return row


def verify_log(s: Session) -> dict[str, Any]:
    """Recompute the chain: ``{"entries", "ok", "first_bad"}`` (``first_bad``: id of the first row that fails)."""
    prev = GENESIS_HASH
    n = 0
    for row in s.scalars(select(ReviewDecision).order_by(ReviewDecision.id)):
        n += 1
        if row.prev_hash != prev or row.hash != decision_hash(prev, _fields(row)):
            return {"entries": n, "ok": False, "first_bad": row.id}
        prev = row.hash
    return {"entries": n, "ok": True, "first_bad": None}


def latest_decisions(s: Session, targets: Iterable[str]) -> dict[str, str]:
    """target → its latest decision ("pass" | "fail"), for the targets that have one."""
    return {target: decision for target, (decision, _at) in latest_decisions_at(s, targets).items()}


def latest_decisions_at(s: Session, targets: Iterable[str]) -> dict[str, tuple[str, datetime]]:
    """target → (its latest decision, when it was made), for the targets that have one."""
    wanted = sorted(set(targets))
    out: dict[str, tuple[str, datetime]] = {}
    for i in range(0, len(wanted), 500):  # bounded IN lists
        rows = s.execute(select(ReviewDecision.target, ReviewDecision.decision, ReviewDecision.at)
                         .where(ReviewDecision.target.in_(wanted[i:i + 500]))
                         .order_by(ReviewDecision.id))  # fmt: skip
        for target, decision, at in rows:
            out[target] = (decision, at)
    return out
