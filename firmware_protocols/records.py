"""Hour records: the signed, hash-chained facts a terminal reports (contract v1, see CONTRACT.md).

A record is a compact JWS (``typ`` = :data:`RECORD_TYP`) whose payload is::

    {"v": 1, "kind": K, "terminal": T, "chain": C, "seq": N, "prev": H, "at": "2026-11-27T00:01:00Z", "body": {...}}

``seq`` counts from 0 (the genesis) with no gaps inside a chain; ``prev`` is the SHA-256 (hex) of the previous record's
exact compact bytes (64 zeros for the genesis). A terminal starts chain 1 on first start; a terminal that lost its
database starts chain C+1 with a new genesis (which names the chain it replaces), signed by its provisioned key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeGuard

from firmware_protocols import envelope
from firmware_protocols.errors import MalformedMessage, UnsupportedVersion
from firmware_protocols.identifiers import CourseCode, RecordNumber, check_national_id, check_vin

CONTRACT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
RECORD_TYP = "jiapei.record.v1"
GENESIS_PREV = "0" * 64
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class RecordKind(StrEnum):
    GENESIS = "genesis"
    COACH_LOGIN = "coach_login"
    COACH_LOGOUT = "coach_logout"
    STUDENT_LOGIN = "student_login"
    STUDENT_LOGOUT = "student_logout"
    MINUTE = "minute"
    FACE_CHECK = "face_check"
    EVENT = "event"


class FaceResult(StrEnum):
    PASS = "pass"  # noqa: S105 - a face-check outcome, not a password
    FAIL = "fail"
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    CAMERA_ERROR = "camera_error"


#: Body fields each kind must carry (more are allowed: evidence grows in later versions of the same `v`).
REQUIRED_BODY: dict[RecordKind, tuple[str, ...]] = {
    RecordKind.GENESIS: ("public_key", "reason"),
    RecordKind.COACH_LOGIN: ("coach", "face"),
    RecordKind.COACH_LOGOUT: ("coach",),
    RecordKind.STUDENT_LOGIN: ("student", "coach", "course", "session", "face"),
    RecordKind.STUDENT_LOGOUT: ("student", "coach", "session", "minutes"),
    RecordKind.MINUTE: ("record_no", "student", "coach", "course", "session", "max_speed", "distance_m", "fix30",
                        "fix_count", "vehicle", "face"),
    RecordKind.FACE_CHECK: ("person", "role", "result", "session"),
    RecordKind.EVENT: ("event",),
}  # fmt: skip


def format_time(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("naive datetime")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime:
    if not isinstance(text, str) or not _TIME.match(text):
        raise MalformedMessage(f"time must be YYYY-MM-DDTHH:MM:SSZ, got {text!r}", "bad_time")
    try:
        if len(text) == 20 and text.isascii():  # exactly YYYY-MM-DDTHH:MM:SSZ: what strptime gives, ~70x cheaper
            return datetime.fromisoformat(text)  # (the same fields and range checks; "Z" gives datetime.UTC itself)
        # a final newline ("$" lets it through) or digits other than ASCII ones ("\d"): strptime decides
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise MalformedMessage(f"impossible time {text!r}", "bad_time") from exc


def record_hash(raw: bytes) -> str:
    """The chain hash of a record: SHA-256 of its exact compact JWS bytes, lower-case hex."""
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed record whose fields have been checked against the contract (signature checked separately)."""

    envelope: envelope.Envelope
    kind: RecordKind
    terminal: str
    chain: int
    seq: int
    prev: str
    at: datetime
    body: dict[str, Any]

    @property
    def raw(self) -> bytes:
        return self.envelope.raw

    @property
    def hash(self) -> str:
        return self.envelope.sha256


def build_payload(
    kind: RecordKind, terminal: str, chain: int, seq: int, prev: str, at: datetime, body: dict[str, Any]
) -> dict[str, Any]:
    return {
        "v": CONTRACT_VERSION,
        "kind": str(kind),
        "terminal": terminal,
        "chain": chain,
        "seq": seq,
        "prev": prev,
        "at": format_time(at),
        "body": body,
    }


def sign_record(payload: dict[str, Any], private_key: envelope.PrivateKey) -> bytes:
    parse_payload_fields(payload)  # never sign what the server would refuse
    return envelope.sign(payload, private_key, RECORD_TYP)


def parse_record(raw: bytes | str) -> Record:
    """Parse and check a record's envelope and fields. Does not verify the signature or the chain."""
    env = envelope.parse(raw, expected_typ=None)
    if env.typ != RECORD_TYP:
        raise UnsupportedVersion(f"not a v1 record: typ {env.typ!r}", "unsupported_version")
    kind, terminal, chain, seq, prev, at, body = parse_payload_fields(env.payload)
    return Record(env, kind, terminal, chain, seq, prev, at, body)


def parse_payload_fields(
    p: dict[str, Any],
) -> tuple[RecordKind, str, int, int, str, datetime, dict[str, Any]]:
    if p.get("v") not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(f"record version {p.get('v')!r} not supported", "unsupported_version")
    try:
        kind = RecordKind(str(p.get("kind")))
    except ValueError as exc:
        raise MalformedMessage(f"unknown record kind {p.get('kind')!r}", "bad_kind") from exc
    terminal = check_national_id(p.get("terminal"), "terminal")
    chain, seq = p.get("chain"), p.get("seq")
    if not _is_int(chain) or chain < 1:
        raise MalformedMessage("chain must be an integer ≥ 1", "bad_chain")
    if not _is_int(seq) or seq < 0:
        raise MalformedMessage("seq must be an integer ≥ 0", "bad_seq")
    prev = p.get("prev")
    if not isinstance(prev, str) or not _HEX64.match(prev):
        raise MalformedMessage("prev must be 64 lower-case hex digits", "bad_prev")
    if (kind is RecordKind.GENESIS) != (seq == 0):
        raise MalformedMessage("the genesis and only the genesis has seq 0", "bad_genesis")
    if kind is RecordKind.GENESIS and prev != GENESIS_PREV:
        raise MalformedMessage("a genesis has prev = 64 zeros", "bad_genesis")
    at = parse_time(p.get("at"))
    body = p.get("body")
    if not isinstance(body, dict):
        raise MalformedMessage("body must be an object", "bad_body")
    missing = [f for f in REQUIRED_BODY[kind] if f not in body]
    if missing:
        raise MalformedMessage(f"{kind} body lacks {', '.join(missing)}", "bad_body")
    if kind is RecordKind.MINUTE:
        _check_minute(terminal, body)
    elif kind in (RecordKind.STUDENT_LOGIN, RecordKind.STUDENT_LOGOUT):
        check_national_id(body["student"], "student")
        check_national_id(body["coach"], "coach")
        if kind is RecordKind.STUDENT_LOGIN:
            CourseCode.parse(body["course"])
    elif kind in (RecordKind.COACH_LOGIN, RecordKind.COACH_LOGOUT):
        check_national_id(body["coach"], "coach")
    return kind, terminal, chain, seq, prev, at, body


def _check_minute(terminal: str, body: dict[str, Any]) -> None:
    number = RecordNumber.parse(body["record_no"])
    if number.terminal != terminal:
        raise MalformedMessage("record number names another terminal", "bad_record_no")
    check_national_id(body["student"], "student")
    check_national_id(body["coach"], "coach")
    CourseCode.parse(body["course"])
    for name in ("max_speed", "distance_m", "fix_count"):
        if not _is_int(body[name]) or body[name] < 0:
            raise MalformedMessage(f"{name} must be a non-negative integer", "bad_body")
    fix30 = body["fix30"]
    if fix30 is not None:
        if not isinstance(fix30, dict):
            raise MalformedMessage("fix30 must be an object or null", "bad_body")
        lat, lon = fix30.get("lat"), fix30.get("lon")
        if not (
            _is_int(lat) and _is_int(lon) and -90_000_000 <= lat <= 90_000_000 and -180_000_000 <= lon <= 180_000_000
        ):
            raise MalformedMessage("fix30 lat/lon must be integer micro-degrees in range", "bad_position")
    vehicle = body["vehicle"]
    if vehicle is not None and not isinstance(vehicle, dict):
        raise MalformedMessage("vehicle must be an object or null (no vehicle signal)", "bad_body")
    if vehicle is not None and vehicle.get("vin") is not None:
        check_vin(vehicle["vin"])  # optional: absent or null when the car reports no VIN


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)
