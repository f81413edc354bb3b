"""The server's client for the exam eligibility system: stage-review notices over JSON/HTTP (httpx).

Errors::

    ExamError               base of everything raised here
    ├── ExamUnavailable     network error, timeout, 5xx, 408/429 or an unreadable answer: retry later
    └── ExamRefused         4xx: the exam side refuses this notice as sent; retrying the same bytes will not help

The retry loop belongs to the caller (the stage-review forwarder and its outbox); :func:`next_retry_delay` gives the
wait before the next attempt.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_protocols import envelope

log = logging.getLogger(__name__)

#: Path of the stage-review endpoint on the exam system.
STAGE_REVIEWS_PATH = "/api/v1/stage-reviews"
#: Path of the exam results feed (pass/fail per part).
RESULTS_PATH = "/api/v1/results"
#: First retry delay, seconds.
RETRY_BASE_SECONDS = 1.0
#: Each further failure multiplies the delay by this.
RETRY_FACTOR = 2.0
#: Longest delay between two attempts, seconds (a notice is retried for as long as it takes, at most this far apart).
RETRY_MAX_SECONDS = 300.0
#: 4xx answers that still mean "try again later".
RETRYABLE_4XX = frozenset({408, 425, 429})


class ExamError(Exception):
    """Base of the exam client's errors."""


class ExamUnavailable(ExamError):
    """The exam system could not be reached or failed: retryable."""


class ExamRefused(ExamError):
    """The exam system refused the notice (4xx): not retryable. ``reasons`` say why."""

    def __init__(self, message: str, status_code: int, reasons: tuple[str, ...]) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reasons = reasons


def digest_of(records: Iterable[str]) -> str:
    """SHA-256 hex of the sorted record numbers joined by ``"\\n"``: the notice's ``records_digest``."""
    return hashlib.sha256("\n".join(sorted(records)).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class StageReviewNotice:
    """A stage review (阶段报审): a student's part complete, with the record numbers of the valid minutes behind it."""

    notice_id: str
    student: str
    school: str
    licence_class: str
    part: int
    valid_minutes: int
    xueshi: int
    records: tuple[str, ...]
    records_digest: str
    submitted_at: datetime
    mileage_m: int = 0  # metres driven in the valid minutes behind the notice

    digest_of = staticmethod(digest_of)

    @classmethod
    def create(
        cls,
        *,
        notice_id: str,
        student: str,
        school: str,
        licence_class: str,
        part: int,
        valid_minutes: int,
        xueshi: int,
        records: Iterable[str],
        submitted_at: datetime,
        mileage_m: int = 0,
    ) -> StageReviewNotice:
        """A notice with its records sorted and its digest computed."""
        ordered = tuple(sorted(records))
        return cls(
            notice_id, student, school, licence_class, part, valid_minutes, xueshi, ordered,
            digest_of(ordered), submitted_at, mileage_m,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        if self.submitted_at.tzinfo is None:
            raise ValueError("submitted_at must be an aware datetime")
        return {
            "notice_id": self.notice_id,
            "student": self.student,
            "school": self.school,
            "licence_class": self.licence_class,
            "part": self.part,
            "valid_minutes": self.valid_minutes,
            "xueshi": self.xueshi,
            "records": list(self.records),
            "records_digest": self.records_digest,
            "mileage_m": self.mileage_m,
            "submitted_at": self.submitted_at.isoformat(),
        }


@dataclass(frozen=True)
class ExamReply:
    status: str  # "accepted" | "rejected"
    reasons: tuple[str, ...]
    rejected_records: dict[str, str] = field(default_factory=dict)  # record number → the exam side's reason

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


#: ``typ`` of the server's signature over a notice: a compact JWS whose payload is the notice's JSON without its
#: ``signature`` field (Ed25519, ``kid`` = SHA-256 of the public key, as terminals' records).
NOTICE_TYP = "jiapei-stage-review+jws"


class NoticeSigner:
    """The server's key for stage-review notices. Ed25519 signatures are deterministic: a resent notice carries the
    same bytes, so the exam side's idempotency on the notice id holds."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @property
    def key_id(self) -> str:
        return envelope.key_id(self._key.public_key())

    @property
    def public_pem(self) -> str:
        return envelope.public_key_to_pem(self._key.public_key())

    def signed(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with ``signature`` over everything else."""
        unsigned = {k: v for k, v in body.items() if k != "signature"}
        return {**unsigned, "signature": envelope.sign(unsigned, self._key, NOTICE_TYP).decode("ascii")}

    @classmethod
    def from_file(cls, path: Path) -> NoticeSigner:
        """The key in ``path`` (PKCS#8 PEM, mode 0600), made on first use. A key others can read is refused."""
        from server.pki import check_private_file, write_private

        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())  # fmt: skip
            write_private(path, pem)
            log.info("made the stage-review signing key %s", path)
        check_private_file(path)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(loaded)


def verify_notice(body: dict[str, Any], public_key: envelope.PublicKey) -> None:
    """Check ``body["signature"]`` against ``public_key`` and the rest of ``body``; raises ``MalformedMessage`` /
    ``BadSignature`` (from :mod:`firmware_protocols.envelope`) or ValueError when they differ."""
    jws = envelope.parse(str(body.get("signature", "")), NOTICE_TYP)
    envelope.verify(jws, public_key)
    if jws.payload != {k: v for k, v in body.items() if k != "signature"}:
        raise ValueError("the signed notice differs from the notice sent")


def next_retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0 = the first attempt): capped exponential backoff."""
    if attempt < 0:
        raise ValueError("attempt must be ≥ 0")
    if attempt >= 64:  # far past the cap; avoids float overflow
        return RETRY_MAX_SECONDS
    return float(min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * RETRY_FACTOR**attempt))


class ExamClient:
    """Submit stage-review notices to the exam system. Thread-safe as httpx.Client is; close() when done."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 5.0,
        *,
        transport: httpx.BaseTransport | None = None,
        signer: NoticeSigner | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._signer = signer

    def submit(self, notice: StageReviewNotice) -> ExamReply:
        """Send one notice, signed by the server when a signer is set. The exam side is idempotent on ``notice_id``:
        resending after a failure is safe."""
        body = notice.to_json()
        if self._signer is not None:
            body = self._signer.signed(body)
        try:
            response = self._http.post(STAGE_REVIEWS_PATH, json=body)
        except httpx.TimeoutException as exc:
            raise ExamUnavailable(f"exam system timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ExamUnavailable(f"exam system unreachable: {exc}") from exc
        code = response.status_code
        if code >= 500 or code in RETRYABLE_4XX:
            raise ExamUnavailable(f"exam system answered {code} for notice {notice.notice_id}")
        body = _json_or_none(response)
        if code >= 400:
            reasons = _reasons(body) or (f"http_{code}",)
            raise ExamRefused(f"exam system refused notice {notice.notice_id}: {code} {reasons}", code, reasons)
        if code != 200 or not isinstance(body, dict):
            raise ExamUnavailable(f"exam system gave an unreadable answer ({code}) for notice {notice.notice_id}")
        status = body.get("status")
        if status not in ("accepted", "rejected") or body.get("notice_id") != notice.notice_id:
            raise ExamUnavailable(f"exam system answer for notice {notice.notice_id} is malformed: {body!r}")
        rejected = body.get("rejected_records")
        named = {str(k): str(v) for k, v in rejected.items()} if isinstance(rejected, dict) else {}
        reply = ExamReply(str(status), _reasons(body), named)
        log.info("exam system %s notice %s %s", reply.status, notice.notice_id, list(reply.reasons))
        return reply

    def results(self, after: int) -> list[dict[str, Any]]:
        """Exam results (pass/fail per part) after feed position ``after``: ``seq``, ``student``, ``part``,
        ``passed``, ``sat_at``."""
        try:
            response = self._http.get(RESULTS_PATH, params={"after": after})
        except httpx.HTTPError as exc:
            raise ExamUnavailable(f"exam system unreachable: {exc}") from exc
        body = _json_or_none(response)
        if response.status_code != 200 or not isinstance(body, list):
            raise ExamUnavailable(f"exam results answered {response.status_code}")
        return [r for r in body if isinstance(r, dict) and {"seq", "student", "part", "passed", "sat_at"} <= set(r)]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ExamClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reasons(body: Any) -> tuple[str, ...]:
    if not isinstance(body, dict):
        return ()
    reasons = body.get("reasons")
    if not isinstance(reasons, list):
        detail = body.get("detail")
        return (str(detail),) if isinstance(detail, str) else ()
    return tuple(str(r) for r in reasons)
