"""Messages around the records (contract v1): batches and photos up, acks, commands and the roster down, the lost
notice.

All are UTF-8 JSON objects with ``"v": 1``. Only records and the lost notice are signed; the down messages ride on
topics that only the server may publish to (broker ACL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeGuard

from firmware_protocols import envelope
from firmware_protocols.errors import LocalProtocolError, MalformedMessage, UnsupportedVersion
from firmware_protocols.identifiers import check_national_id
from firmware_protocols.records import SUPPORTED_VERSIONS, format_time, parse_time

#: Records per batch: keeps one MQTT message ≈ 150 KiB at most.
MAX_BATCH_RECORDS = 100
#: An up message larger than this is refused unread (100 records of ~1.5 KiB plus slack).
MAX_MESSAGE_BYTES = 512 * 1024
LOST_TYP = "jiapei.lost.v1"
#: JPEG bytes of one evidence photo: a ≤ 640 px frame at quality ~80 is 30-90 KiB; base64 grows it by 4/3, so the
#: largest photo still fits one message of :data:`MAX_MESSAGE_BYTES`.
MAX_PHOTO_BYTES = 360 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_JPEG_MAGIC = b"\xff\xd8\xff"


def _load(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message of {len(data)} bytes > {MAX_MESSAGE_BYTES}", "too_large")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage("message is not UTF-8 JSON", "bad_json") from exc
    if not isinstance(obj, dict):
        raise MalformedMessage("message is not a JSON object", "bad_json")
    if obj.get("v") not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(f"message version {obj.get('v')!r} not supported", "unsupported_version")
    return obj


def _strict_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """``up/records``: ``{"v":1, "terminal": T, "batch": id, "records": [compact JWS, …]}``."""

    terminal: str
    batch: str
    records: tuple[bytes, ...]

    def encode(self) -> bytes:
        if not 1 <= len(self.records) <= MAX_BATCH_RECORDS:
            raise MalformedMessage(f"a batch holds 1..{MAX_BATCH_RECORDS} records", "bad_batch")
        return _dump(
            {
                "v": 1,
                "terminal": self.terminal,
                "batch": self.batch,
                "records": [r.decode("ascii") for r in self.records],
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> RecordBatch:
        obj = _load(data)
        terminal = check_national_id(obj.get("terminal"), "terminal")
        batch, records = obj.get("batch"), obj.get("records")
        if not isinstance(batch, str) or not 1 <= len(batch) <= 64:
            raise MalformedMessage("batch id must be a string of 1..64 characters", "bad_batch")
        if not isinstance(records, list) or not 1 <= len(records) <= MAX_BATCH_RECORDS:
            raise MalformedMessage(f"records must be a list of 1..{MAX_BATCH_RECORDS}", "bad_batch")
        if not all(isinstance(r, str) for r in records):
            raise MalformedMessage("records must be compact JWS strings", "bad_batch")
        try:
            raw = tuple(r.encode("ascii") for r in records)
        except UnicodeEncodeError as exc:
            raise MalformedMessage("a record is not ASCII", "bad_batch") from exc
        return cls(terminal, batch, raw)


class AckStatus(StrEnum):
    STORED = "stored"  # committed now
    DUPLICATE = "duplicate"  # the same bytes were committed before: same outcome as stored
    REJECTED = "rejected"  # refused for good, with a reason; the terminal keeps it and raises an alarm


@dataclass(frozen=True, slots=True)
class AckResult:
    chain: int
    seq: int
    hash: str
    status: AckStatus
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"chain": self.chain, "seq": self.seq, "hash": self.hash, "status": str(self.status)}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass(frozen=True, slots=True)
class Ack:
    """``down/acks``: the server's application ack, sent only after its database COMMIT returned."""

    batch: str
    results: tuple[AckResult, ...]
    error: str | None = None  # a batch refused whole (unparseable): no per-record results

    def encode(self) -> bytes:
        d: dict[str, Any] = {"v": 1, "batch": self.batch, "results": [r.to_json() for r in self.results]}
        if self.error:
            d["error"] = self.error
        return _dump(d)

    @classmethod
    def decode(cls, data: bytes) -> Ack:
        obj = _load(data)
        results = obj.get("results")
        if not isinstance(obj.get("batch"), str) or not isinstance(results, list):
            raise MalformedMessage("ack needs batch and results", "bad_ack")
        out = []
        for r in results:
            try:
                out.append(
                    AckResult(int(r["chain"]), int(r["seq"]), str(r["hash"]), AckStatus(r["status"]), r.get("reason"))
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise MalformedMessage(f"bad ack result {r!r}", "bad_ack") from exc
        error = obj.get("error")
        return cls(obj["batch"], tuple(out), error if isinstance(error, str) else None)


class CommandName(StrEnum):
    RESEND = "resend"  # send records chain/from_seq..to_seq again (to_seq None = to the end)


@dataclass(frozen=True, slots=True)
class Command:
    """``down/commands``."""

    cmd: CommandName
    args: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _dump({"v": 1, "cmd": str(self.cmd), **self.args})

    @classmethod
    def decode(cls, data: bytes) -> Command:
        obj = _load(data)
        try:
            cmd = CommandName(obj.pop("cmd"))
        except (KeyError, ValueError) as exc:
            raise MalformedMessage("unknown command", "bad_command") from exc
        obj.pop("v")
        return cls(cmd, obj)

    @classmethod
    def resend(cls, chain: int, from_seq: int, to_seq: int | None) -> Command:
        return cls(CommandName.RESEND, {"chain": chain, "from_seq": from_seq, "to_seq": to_seq})


@dataclass(frozen=True, slots=True)
class LostNotice:
    """``up/notices``: signed by the terminal when it cannot serve a resend — never silence.

    Payload ``{"v":1, "kind":"lost", "terminal", "chain", "from_seq", "to_seq", "reason", "at"}``.
    """

    terminal: str
    chain: int
    from_seq: int
    to_seq: int
    reason: str
    at: datetime

    def sign(self, private_key: envelope.PrivateKey) -> bytes:
        payload = {
            "v": 1,
            "kind": "lost",
            "terminal": self.terminal,
            "chain": self.chain,
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "reason": self.reason,
            "at": format_time(self.at),
        }
        return envelope.sign(payload, private_key, LOST_TYP)

    @classmethod
    def parse(cls, raw: bytes) -> tuple[LostNotice, envelope.Envelope]:
        env = envelope.parse(raw, expected_typ=LOST_TYP)
        p = env.payload
        if p.get("v") not in SUPPORTED_VERSIONS or p.get("kind") != "lost":
            raise UnsupportedVersion("not a v1 lost notice", "unsupported_version")
        chain, from_seq, to_seq = (p.get(k) for k in ("chain", "from_seq", "to_seq"))
        if not (
            _strict_int(chain) and _strict_int(from_seq) and _strict_int(to_seq) and isinstance(p.get("reason"), str)
        ):
            raise MalformedMessage("lost notice needs integer chain/from_seq/to_seq and a reason", "bad_notice")
        notice = cls(check_national_id(p.get("terminal"), "terminal"), chain, from_seq, to_seq, str(p["reason"]),
                     parse_time(p.get("at")))  # fmt: skip
        if notice.from_seq > notice.to_seq or notice.from_seq < 0:
            raise MalformedMessage("lost notice range is empty", "bad_notice")
        return notice, env


@dataclass(frozen=True, slots=True)
class RosterPerson:
    id: str
    name: str
    classes: tuple[str, ...]
    face: str  # a biometrics template string, e.g. "fr1:…"


#: Most bookings one roster may carry (a car's day holds far fewer; more is a malformed roster).
MAX_ROSTER_BOOKINGS = 500


@dataclass(frozen=True, slots=True)
class RosterBooking:
    """A booked student of this car today: sign-in is accepted from ``sign_in_from`` until ``ends_at``."""

    student: str
    coach: str
    sign_in_from: datetime
    ends_at: datetime

    def admits(self, student: str, at: datetime) -> bool:
        return self.student == student and self.sign_in_from <= at < self.ends_at


@dataclass(frozen=True, slots=True)
class Roster:
    """``down/roster`` (retained): who may train on this terminal, with their enrolment face templates; optionally
    whether walk-ins are allowed and today's bookings (None: the server sent no booking rule)."""

    terminal: str
    school: str
    issued_at: datetime
    coaches: tuple[RosterPerson, ...]
    students: tuple[RosterPerson, ...]
    walk_ins: bool | None = None
    bookings: tuple[RosterBooking, ...] | None = None

    def admits(self, student: str, at: datetime) -> bool:
        """Whether a student's sign-in at ``at`` is allowed by the booking rule of this roster."""
        if self.walk_ins is not False or self.bookings is None:
            return True
        return any(b.admits(student, at) for b in self.bookings)

    def encode(self) -> bytes:
        def person(p: RosterPerson) -> dict[str, Any]:
            return {"id": p.id, "name": p.name, "classes": list(p.classes), "face": p.face}

        obj: dict[str, Any] = {
            "v": 1,
            "terminal": self.terminal,
            "school": self.school,
            "issued_at": format_time(self.issued_at),
            "coaches": [person(p) for p in self.coaches],
            "students": [person(p) for p in self.students],
        }
        if self.walk_ins is not None:
            obj["walk_ins"] = self.walk_ins
        if self.bookings is not None:
            obj["bookings"] = [{"student": b.student, "coach": b.coach, "sign_in_from": format_time(b.sign_in_from),
                                "ends_at": format_time(b.ends_at)} for b in self.bookings]  # fmt: skip
        return _dump(obj)

    @classmethod
    def decode(cls, data: bytes) -> Roster:
        obj = _load(data)
        try:

            def people(key: str) -> tuple[RosterPerson, ...]:
                return tuple(
                    RosterPerson(
                        check_national_id(p["id"], key),
                        str(p["name"]),
                        tuple(str(c) for c in p["classes"]),
                        str(p["face"]),
                    )
                    for p in obj[key]
                )

            walk_ins = obj.get("walk_ins")
            if walk_ins is not None and not isinstance(walk_ins, bool):
                raise MalformedMessage("roster walk_ins must be true or false", "bad_roster")
            return cls(
                check_national_id(obj["terminal"], "terminal"),
                str(obj["school"]),
                parse_time(obj["issued_at"]),
                people("coaches"),
                people("students"),
                walk_ins,
                _roster_bookings(obj.get("bookings")),
            )
        except (KeyError, TypeError) as exc:
            raise MalformedMessage("roster lacks fields", "bad_roster") from exc


def _roster_bookings(items: Any) -> tuple[RosterBooking, ...] | None:
    if items is None:
        return None
    if not isinstance(items, list) or len(items) > MAX_ROSTER_BOOKINGS:
        raise MalformedMessage(f"roster bookings must be a list of at most {MAX_ROSTER_BOOKINGS}", "bad_roster")
    out: list[RosterBooking] = []
    for b in items:
        if not isinstance(b, dict):
            raise MalformedMessage("a roster booking must be an object", "bad_roster")
        booking = RosterBooking(check_national_id(b["student"], "student"), check_national_id(b["coach"], "coach"),
                                parse_time(b["sign_in_from"]), parse_time(b["ends_at"]))  # fmt: skip
        if booking.ends_at <= booking.sign_in_from:
            raise MalformedMessage("a roster booking ends after it opens", "bad_roster")
        out.append(booking)
    return tuple(out)


KEY_VOUCH_TYP = "jiapei.key-vouch.v1"
ENROL_TYP = "jiapei.enrol.v1"


@dataclass(frozen=True, slots=True)
class KeyVouch:
    """The old signing key's word for the new one, carried in the genesis of the chain a rotation starts.

    Payload ``{"v":1, "kind":"key_vouch", "terminal", "new_key_id", "chain", "previous_chain", "last_seq", "at"}``:
    chain ``chain`` is signed by ``new_key_id``, and ``previous_chain`` ends at ``last_seq`` (the server refuses
    any later record of it, so a stolen old key cannot extend the old chain).
    """

    terminal: str
    new_key_id: str
    chain: int
    previous_chain: int
    last_seq: int
    at: datetime

    def sign(self, old_key: envelope.PrivateKey) -> str:
        payload = {"v": 1, "kind": "key_vouch", "terminal": self.terminal, "new_key_id": self.new_key_id,
                   "chain": self.chain, "previous_chain": self.previous_chain, "last_seq": self.last_seq,
                   "at": format_time(self.at)}  # fmt: skip
        return envelope.sign(payload, old_key, KEY_VOUCH_TYP).decode("ascii")

    @classmethod
    def parse(cls, raw: str | bytes) -> tuple[KeyVouch, envelope.Envelope]:
        env = envelope.parse(raw, expected_typ=KEY_VOUCH_TYP)
        p = env.payload
        if p.get("v") not in SUPPORTED_VERSIONS or p.get("kind") != "key_vouch":
            raise UnsupportedVersion("not a v1 key vouch", "unsupported_version")
        ints = [p.get(k) for k in ("chain", "previous_chain", "last_seq")]
        if not all(_strict_int(i) for i in ints) or not isinstance(p.get("new_key_id"), str):
            raise MalformedMessage("key vouch needs integer chain/previous_chain/last_seq and new_key_id", "bad_vouch")
        chain, previous, last = (int(i) for i in ints)  # type: ignore[arg-type]
        if not (0 < previous < chain) or last < 0:
            raise MalformedMessage("key vouch: previous_chain must precede chain", "bad_vouch")
        vouch = cls(check_national_id(p.get("terminal"), "terminal"), str(p["new_key_id"]), chain, previous, last,
                    parse_time(p.get("at")))  # fmt: skip
        return vouch, env


@dataclass(frozen=True, slots=True)
class EnrolmentRequest:
    """What a terminal sends once, with the operator's one-time token, to be registered (HTTP, not MQTT).

    Signed by the terminal's new signing key (proof that it holds it); ``csr`` is a PEM certificate request for
    the terminal's MQTT client certificate, self-signed by its TLS key, naming ``CN=<terminal>``.
    Payload ``{"v":1, "kind":"enrol", "terminal", "token", "public_key", "csr", "at"}``.
    """

    terminal: str
    token: str
    public_key: str
    csr: str
    at: datetime

    def sign(self, signing_key: envelope.PrivateKey) -> bytes:
        payload = {"v": 1, "kind": "enrol", "terminal": self.terminal, "token": self.token,
                   "public_key": self.public_key, "csr": self.csr, "at": format_time(self.at)}  # fmt: skip
        return envelope.sign(payload, signing_key, ENROL_TYP)

    @classmethod
    def parse_and_verify(cls, raw: str | bytes) -> EnrolmentRequest:
        """Parse, and verify the signature with the public key the request carries."""
        env = envelope.parse(raw, expected_typ=ENROL_TYP)
        p = env.payload
        if p.get("v") not in SUPPORTED_VERSIONS or p.get("kind") != "enrol":
            raise UnsupportedVersion("not a v1 enrolment request", "unsupported_version")
        fields = [p.get(k) for k in ("token", "public_key", "csr")]
        if not all(isinstance(f, str) and f for f in fields):
            raise MalformedMessage("enrolment request needs token, public_key and csr", "bad_enrolment")
        request = cls(check_national_id(p.get("terminal"), "terminal"), str(p["token"]), str(p["public_key"]),
                      str(p["csr"]), parse_time(p.get("at")))  # fmt: skip
        key = envelope.public_key_from_pem(request.public_key)
        if env.kid != envelope.key_id(key):
            raise MalformedMessage("the request is not signed by the key it registers", "bad_enrolment")
        envelope.verify(env, key)
        return request


def photo_sha256(jpeg: bytes) -> str:
    """What a ``face_check`` record's ``photo`` field holds: SHA-256 (lower-case hex) of the exact JPEG bytes."""
    return hashlib.sha256(jpeg).hexdigest()


def is_sha256_hex(text: object) -> TypeGuard[str]:
    return isinstance(text, str) and _SHA256_HEX.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class PhotoUpload:
    """``up/photos``: the JPEG of one face check, named by the ``face_check`` record at ``chain``/``seq``.

    ``{"v":1, "terminal": T, "sha256": H, "chain": C, "seq": N, "at": time taken, "jpeg": base64}``. Not signed
    itself: the signed record names ``H``, so the chain vouches for the bytes. :meth:`decode` refuses a photo whose
    bytes do not hash to ``sha256`` (``photo_hash_mismatch``), that is not a JPEG (``not_jpeg``) or that is larger
    than :data:`MAX_PHOTO_BYTES` (``too_large``).
    """

    terminal: str
    sha256: str
    chain: int
    seq: int
    at: datetime
    jpeg: bytes = field(repr=False)

    @classmethod
    def of(cls, terminal: str, chain: int, seq: int, at: datetime, jpeg: bytes) -> PhotoUpload:
        return cls(terminal, photo_sha256(jpeg), chain, seq, at, jpeg)

    def encode(self) -> bytes:
        _check_photo(self.jpeg, self.sha256, local=True)
        if not (self.chain >= 1 and self.seq >= 0):
            raise LocalProtocolError("a photo names a record by chain ≥ 1 and seq ≥ 0", "bad_photo")
        return _dump(
            {
                "v": 1,
                "terminal": self.terminal,
                "sha256": self.sha256,
                "chain": self.chain,
                "seq": self.seq,
                "at": format_time(self.at),
                "jpeg": base64.b64encode(self.jpeg).decode("ascii"),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> PhotoUpload:
        obj = _load(data)
        terminal = check_national_id(obj.get("terminal"), "terminal")
        sha, chain, seq, b64 = obj.get("sha256"), obj.get("chain"), obj.get("seq"), obj.get("jpeg")
        if not is_sha256_hex(sha):
            raise MalformedMessage("sha256 must be 64 lower-case hex digits", "bad_photo")
        if not (_strict_int(chain) and _strict_int(seq) and chain >= 1 and seq >= 0):
            raise MalformedMessage("a photo names its record by integer chain ≥ 1 and seq ≥ 0", "bad_photo")
        if not isinstance(b64, str):
            raise MalformedMessage("jpeg must be a base64 string", "bad_photo")
        try:
            jpeg = base64.b64decode(b64.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise MalformedMessage("jpeg is not valid base64", "bad_photo") from exc
        _check_photo(jpeg, sha, local=False)
        return cls(terminal, sha, chain, seq, parse_time(obj.get("at")), jpeg)


def _check_photo(jpeg: bytes, sha: str, *, local: bool) -> None:
    error = LocalProtocolError if local else MalformedMessage
    if len(jpeg) > MAX_PHOTO_BYTES:
        raise error(f"photo of {len(jpeg)} bytes > {MAX_PHOTO_BYTES}", "too_large")
    if not jpeg.startswith(_JPEG_MAGIC):
        raise error("the photo is not a JPEG", "not_jpeg")
    if photo_sha256(jpeg) != sha:
        raise error("the photo's bytes do not hash to its sha256", "photo_hash_mismatch")


class PhotoStatus(StrEnum):
    STORED = "stored"  # committed now: the terminal may delete its copy
    DUPLICATE = "duplicate"  # committed before (a resend): same outcome as stored
    PENDING = "pending"  # held: the record that names it is not stored yet; send it again later
    REJECTED = "rejected"  # refused for good (not named by that record, unreadable): kept on the terminal, alarm


@dataclass(frozen=True, slots=True)
class PhotoAck:
    """``down/acks`` for a photo, sent only after the server's COMMIT: ``{"v":1, "photo": H, "status", "reason"?}``.

    Told apart from a batch :class:`Ack` by its ``photo`` field (see :func:`decode_ack`)."""

    photo: str
    status: PhotoStatus
    reason: str | None = None

    def encode(self) -> bytes:
        d: dict[str, Any] = {"v": 1, "photo": self.photo, "status": str(self.status)}
        if self.reason:
            d["reason"] = self.reason
        return _dump(d)

    @classmethod
    def decode(cls, data: bytes) -> PhotoAck:
        return cls._from(_load(data))

    @classmethod
    def _from(cls, obj: dict[str, Any]) -> PhotoAck:
        photo, reason = obj.get("photo"), obj.get("reason")
        if not is_sha256_hex(photo):
            raise MalformedMessage("photo ack needs the photo's sha256", "bad_ack")
        try:
            status = PhotoStatus(str(obj.get("status")))
        except ValueError as exc:
            raise MalformedMessage(f"unknown photo ack status {obj.get('status')!r}", "bad_ack") from exc
        return cls(photo, status, reason if isinstance(reason, str) else None)


def decode_ack(data: bytes) -> Ack | PhotoAck:
    """A ``down/acks`` message: a photo's ack (it has ``photo``) or a batch's."""
    obj = _load(data)
    if "photo" in obj:
        return PhotoAck._from(obj)
    return Ack.decode(data)
