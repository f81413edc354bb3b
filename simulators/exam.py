"""Exam eligibility system simulator: the traffic police's side of the stage review (阶段报审), as a real HTTP service.

JSON over HTTP, documented at ``/docs`` (OpenAPI):

- ``POST /api/v1/stage-reviews``: a notice that a student completed a part → 200 ``{"notice_id", "status":
  "accepted" | "rejected", "reasons": [...]}``. Idempotent on ``notice_id``: the same notice again gets the same
  answer and is stored once; another body under the same id gets 409. A malformed notice (fields, record numbers,
  digest) gets 422 ``{"status": "invalid", "reasons": [...]}``. A notice with no records, or with a record already
  used by another accepted notice, is rejected; ``rejected_records`` names the records at fault and why. With the
  server's public key given (``--server-key``), a notice must carry the server's ``signature`` (a compact JWS over
  the rest of the notice, ``typ`` ``jiapei-stage-review+jws``): a missing or bad one gets 422.
- ``GET /api/v1/stage-reviews``: the notices received, oldest first.
- ``GET /api/v1/eligibility/{student}``: the parts accepted for a student (they may book those exams).
- ``POST /api/v1/results`` ``{"student", "part", "passed", "sat_at"}``: the exam hall's result of a part (pass/fail;
  409 ``not_eligible`` unless a stage review of that part was accepted) → ``{"seq", …}``.
  ``GET /api/v1/results?after=SEQ``: the results after ``seq``, oldest first (the feed the server polls).
- ``POST /admin/faults`` ``{"fail_next": n, "delay_next": n, "delay_seconds": s, "reject_next": n,
  "reject_reason": r}``: the next n stage-review posts answer 503 (and/or are answered only after a delay), for tests
  of the forwarder's retries; the next ``reject_next`` new notices are rejected, their first three records with
  ``reject_reason`` (the exam side's own checks found them wanting). ``GET`` shows them.

State lives in a SQLite file under ``state_dir`` (in memory without one) and survives a restart. ``submitted_at`` is
not part of a notice's identity: a resend with a fresh timestamp is the same notice.

Run: ``python -m simulators.exam --port 8090 --state-dir /tmp/exam [--server-key server-notice.pub.pem]`` (env
``JIAPEI_EXAM_FAIL_NEXT`` = faults at start).
This module uses ``firmware_protocols`` only, never ``agent`` or ``server``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from firmware_protocols import envelope
from firmware_protocols.errors import BadSignature, MalformedMessage
from firmware_protocols.identifiers import CLASS_CODES, RecordNumber, check_national_id

log = logging.getLogger(__name__)

DB_NAME = "exam.sqlite3"
#: Most record numbers one notice may carry: part 3 of C1 is 24 学时 × 60 min; ×4 leaves room for other policies.
MAX_RECORDS = 24 * 60 * 4
#: Longest injected delay, seconds (a fault for timeout tests, not a way to hang the simulator).
MAX_DELAY_SECONDS = 30.0
#: Fields that make a notice's identity (``submitted_at`` is left out: a resend may carry a fresh time).
IDENTITY_FIELDS = (
    "notice_id", "student", "school", "licence_class", "part", "valid_minutes", "xueshi", "records", "records_digest",
    "mileage_m",
)  # fmt: skip
#: ``typ`` of the server's signature over a notice.
NOTICE_TYP = "jiapei-stage-review+jws"
#: How many records a simulated rejection names.
REJECT_RECORDS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    notice_id TEXT NOT NULL UNIQUE,
    identity TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    reasons TEXT NOT NULL,
    rejected TEXT NOT NULL DEFAULT '{}',
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    student TEXT NOT NULL,
    part INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    sat_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS used_records (
    record_no TEXT PRIMARY KEY,
    notice_id TEXT NOT NULL
);
"""


class StageReviewIn(BaseModel):
    notice_id: str = Field(min_length=1, max_length=64)
    student: str = Field(min_length=16, max_length=16)
    school: str = Field(min_length=1, max_length=64)
    licence_class: str
    part: int = Field(ge=1, le=4)
    valid_minutes: int = Field(ge=0)
    xueshi: int = Field(ge=0)
    records: list[str] = Field(max_length=MAX_RECORDS)
    records_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    submitted_at: datetime
    mileage_m: int = Field(default=0, ge=0)
    signature: str | None = Field(default=None, max_length=8192)


class StageReviewOut(BaseModel):
    notice_id: str
    status: Literal["accepted", "rejected"]
    reasons: list[str]
    rejected_records: dict[str, str] = Field(default_factory=dict)  # record number → why the exam side refused it


class ReceivedNotice(StageReviewOut):
    received_at: str
    notice: dict[str, Any]


class Eligibility(BaseModel):
    student: str
    parts_accepted: list[int]
    notices: dict[str, str]  # part → notice id


class ResultIn(BaseModel):
    student: str = Field(min_length=16, max_length=16)
    part: int = Field(ge=1, le=4)
    passed: bool
    sat_at: datetime | None = None


class ResultOut(BaseModel):
    seq: int
    student: str
    part: int
    passed: bool
    sat_at: str


class Faults(BaseModel):
    fail_next: int = Field(default=0, ge=0)
    delay_next: int = Field(default=0, ge=0)
    delay_seconds: float = Field(default=0.0, ge=0.0, le=MAX_DELAY_SECONDS)
    reject_next: int = Field(default=0, ge=0)
    reject_reason: str = Field(default="photo_check_failed", min_length=1, max_length=64)


class Invalid(BaseModel):
    status: Literal["invalid"] = "invalid"
    reasons: list[str]


def records_digest(records: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(records)).encode("utf-8")).hexdigest()


class ExamState:
    """The simulator's store: one SQLite connection behind a lock (FastAPI runs sync endpoints in threads)."""

    def __init__(self, state_dir: Path | None) -> None:
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            target = str(state_dir / DB_NAME)
        else:
            target = ":memory:"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        if state_dir is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self.faults = Faults()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def take_fault(self) -> tuple[bool, float]:
        """(answer 503?, seconds to delay) for the next stage-review post, consuming one of each."""
        with self._lock:
            fail = self.faults.fail_next > 0
            delay = 0.0
            if self.faults.delay_next > 0:
                delay = self.faults.delay_seconds
                self.faults.delay_next -= 1
            if fail:
                self.faults.fail_next -= 1
            return fail, delay

    def submit(self, notice: StageReviewIn) -> StageReviewOut | None:
        """Judge and store a notice; the stored answer for a known identical notice; None for a conflicting one."""
        body = notice.model_dump(mode="json")
        identity = json.dumps({k: body[k] for k in IDENTITY_FIELDS}, sort_keys=True, separators=(",", ":"))
        with self._lock:
            row = self._db.execute(
                "SELECT identity, status, reasons, rejected FROM notices WHERE notice_id = ?", (notice.notice_id,)
            ).fetchone()
            if row is not None:
                if row[0] != identity:
                    return None
                return StageReviewOut(notice_id=notice.notice_id, status=row[1], reasons=json.loads(row[2]),
                                      rejected_records=json.loads(row[3]))  # fmt: skip
            reasons, rejected = self._judge(notice)
            status: Literal["accepted", "rejected"] = "rejected" if reasons else "accepted"
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO notices (notice_id, identity, body, status, reasons, rejected, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (notice.notice_id, identity, json.dumps(body), status, json.dumps(reasons), json.dumps(rejected),
                     _now()),
                )  # fmt: skip
                if status == "accepted":
                    self._db.executemany(
                        "INSERT INTO used_records (record_no, notice_id) VALUES (?, ?)",
                        [(r, notice.notice_id) for r in notice.records],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        log.info("stage review %s for %s part %d: %s %s", notice.notice_id, notice.student, notice.part, status,
                 reasons)  # fmt: skip
        return StageReviewOut(notice_id=notice.notice_id, status=status, reasons=reasons, rejected_records=rejected)

    def _judge(self, notice: StageReviewIn) -> tuple[list[str], dict[str, str]]:
        """What the exam side checks beyond the schema: records present and not already used elsewhere (and the
        injected rejections). Returns the reasons and the records at fault."""
        if not notice.records:
            return ["no_records"], {}
        marks = ",".join("?" * len(notice.records))
        used = [r for (r,) in self._db.execute(
            f"SELECT record_no FROM used_records WHERE record_no IN ({marks})",  # noqa: S608 - placeholders only
            notice.records,
        )]  # fmt: skip
        if used:
            return ["record_reused"], dict.fromkeys(sorted(used), "record_reused")
        if self.faults.reject_next > 0:
            self.faults.reject_next -= 1
            reason = self.faults.reject_reason
            return [reason], dict.fromkeys(sorted(notice.records)[:REJECT_RECORDS], reason)
        return [], {}

    def list_notices(self) -> list[ReceivedNotice]:
        with self._lock:
            rows = self._db.execute(
                "SELECT notice_id, status, reasons, received_at, body FROM notices ORDER BY seq"
            ).fetchall()
        return [
            ReceivedNotice(notice_id=r[0], status=r[1], reasons=json.loads(r[2]), received_at=r[3],
                           notice=json.loads(r[4]))
            for r in rows
        ]  # fmt: skip

    def add_result(self, r: ResultIn) -> ResultOut:
        sat_at = (r.sat_at or datetime.now(UTC)).astimezone(UTC).isoformat()
        with self._lock:
            cur = self._db.execute("INSERT INTO results (student, part, passed, sat_at) VALUES (?, ?, ?, ?)",
                                   (r.student, r.part, int(r.passed), sat_at))  # fmt: skip
            seq = int(cur.lastrowid or 0)
        return ResultOut(seq=seq, student=r.student, part=r.part, passed=r.passed, sat_at=sat_at)

    def results(self, after: int) -> list[ResultOut]:
        with self._lock:
            rows = self._db.execute("SELECT seq, student, part, passed, sat_at FROM results WHERE seq > ? ORDER BY seq"
                                    " LIMIT 1000", (after,)).fetchall()  # fmt: skip
        return [ResultOut(seq=r[0], student=r[1], part=r[2], passed=bool(r[3]), sat_at=r[4]) for r in rows]

    def eligibility(self, student: str) -> Eligibility:
        notices: dict[str, str] = {}
        for n in self.list_notices():
            if n.status == "accepted" and n.notice["student"] == student:
                notices.setdefault(str(n.notice["part"]), n.notice_id)
        return Eligibility(student=student, parts_accepted=sorted(int(p) for p in notices), notices=notices)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _field_reasons(notice: StageReviewIn) -> list[str]:
    """Checks that need the national identifiers: 422 reasons, empty when the notice is well formed."""
    reasons: list[str] = []
    try:
        check_national_id(notice.student, "student")
    except MalformedMessage:
        reasons.append("bad_student")
    if notice.licence_class not in CLASS_CODES:
        reasons.append("bad_licence_class")
    if notice.submitted_at.tzinfo is None:
        reasons.append("naive_submitted_at")
    bad_records = False
    for record_no in notice.records:
        try:
            RecordNumber.parse(record_no)
        except MalformedMessage:
            bad_records = True
    if bad_records:
        reasons.append("bad_record_no")
    if len(set(notice.records)) != len(notice.records):
        reasons.append("duplicate_records")
    if notice.records_digest != records_digest(notice.records):
        reasons.append("records_digest_mismatch")
    return reasons


def _signature_reasons(notice: StageReviewIn, key: envelope.PublicKey) -> list[str]:
    """Empty when ``notice`` carries the server's valid signature over exactly its other fields."""
    if not notice.signature:
        return ["missing_signature"]
    try:
        jws = envelope.parse(notice.signature, NOTICE_TYP)
        envelope.verify(jws, key)
        signed = StageReviewIn.model_validate(jws.payload)
    except (MalformedMessage, BadSignature, ValueError):
        return ["bad_signature"]
    if signed.model_dump(exclude={"signature"}) != notice.model_dump(exclude={"signature"}):
        return ["bad_signature"]
    return []


def create_app(state_dir: Path | None, *, fail_next: int = 0, server_key: envelope.PublicKey | None = None) -> FastAPI:
    """The simulator app; state in ``state_dir/exam.sqlite3`` (in memory when None). With ``server_key``, notices
    must carry the server's signature."""
    state = ExamState(state_dir)
    state.faults = Faults(fail_next=fail_next)
    app = FastAPI(
        title="jiapei exam eligibility simulator",
        version="1",
        description="The exam side of the stage review (阶段报审): notices in, accepted/rejected out.",
    )
    app.state.exam = state

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [
            f"bad_{'_'.join(str(p) for p in err.get('loc', ())[1:2]) or 'body'}: {err.get('msg', '')}"
            for err in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"status": "invalid", "reasons": reasons})

    @app.post(
        "/api/v1/stage-reviews",
        response_model=StageReviewOut,
        responses={409: {"description": "another notice under this id"}, 422: {"model": Invalid},
                   503: {"description": "injected fault"}},
    )  # fmt: skip
    def post_stage_review(notice: StageReviewIn) -> Any:
        fail, delay = state.take_fault()
        if delay:
            time.sleep(delay)
        if fail:
            return JSONResponse(status_code=503, content={"detail": "exam system unavailable (injected fault)"})
        reasons = _field_reasons(notice)
        if server_key is not None:
            reasons += _signature_reasons(notice, server_key)
        if reasons:
            return JSONResponse(status_code=422, content={"status": "invalid", "reasons": reasons})
        reply = state.submit(notice)
        if reply is None:
            return JSONResponse(
                status_code=409,
                content={"status": "conflict", "reasons": ["notice_id_conflict"],
                         "detail": f"notice {notice.notice_id} was received with another body"},
            )  # fmt: skip
        return reply

    @app.get("/api/v1/stage-reviews", response_model=list[ReceivedNotice])
    def list_stage_reviews() -> list[ReceivedNotice]:
        return state.list_notices()

    @app.get("/api/v1/eligibility/{student}", response_model=Eligibility)
    def eligibility(student: str) -> Eligibility:
        return state.eligibility(student)

    @app.post("/api/v1/results", response_model=ResultOut, responses={409: {"description": "part not accepted"}})
    def post_result(result: ResultIn) -> Any:
        if result.part not in state.eligibility(result.student).parts_accepted:
            return JSONResponse(status_code=409, content={"status": "not_eligible", "reasons": ["not_eligible"]})
        return state.add_result(result)

    @app.get("/api/v1/results", response_model=list[ResultOut])
    def list_results(after: int = 0) -> list[ResultOut]:
        return state.results(after)

    @app.get("/admin/faults", response_model=Faults)
    def get_faults() -> Faults:
        return state.faults

    @app.post("/admin/faults", response_model=Faults)
    def set_faults(faults: Annotated[Faults, Body()]) -> Faults:
        state.faults = faults
        return faults

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def run(
    host: str = "127.0.0.1", port: int = 8090, state_dir: Path | None = None, server_key: Path | None = None
) -> None:
    """Serve the simulator until interrupted."""
    import uvicorn

    fail_next = int(os.environ.get("JIAPEI_EXAM_FAIL_NEXT", "0"))
    key = envelope.public_key_from_pem(server_key.read_bytes()) if server_key is not None else None
    uvicorn.run(create_app(state_dir, fail_next=fail_next, server_key=key), host=host, port=port, log_level="info")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument(
        "--server-key", type=Path, default=None, help="the server public key (PEM) notices must be signed with"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    run(args.host, args.port, args.state_dir, args.server_key)


if __name__ == "__main__":
    main()
