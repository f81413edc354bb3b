"""Evidence photos (``up/photos``): checked against the signed record that names them, stored once, acked, and
re-checked by the server itself.

A terminal's face confidence is its own word. Every ``face_check`` record names the SHA-256 of its photo
(``body.photo``); when the photo arrives, :class:`PhotoIngest`:

1. refuses it unless the record at its (terminal, chain, seq) is a stored ``face_check`` that names exactly these
   bytes (``not_named`` + alarm ``photo_not_named``). If that record is not stored yet the photo is held ``pending``
   (order independence: records and photos of one terminal may reach different workers in any order) and stored
   when the record is there — on the terminal's next send, or by :meth:`PhotoIngest.resolve_pending`;
2. stores it once (``check_photos``, keyed by SHA-256) and acks it only after COMMIT; a replay changes nothing and
   is answered ``duplicate``;
3. re-checks the face (:class:`biometrics.FaceEngine`): the distance from the photo's one face to the enrolment
   template of the person the record names, the nearest *other* enrolled person of the school, and duplicates —
   the same JPEG named by another record (``exact``), the same face image (encodings closer than
   :data:`NEAR_DUPLICATE_DISTANCE`, ``near``) in another check of that person, or the same picture by its perceptual
   hash (:mod:`biometrics.phash` of the frame above the caption, within :data:`PHASH_DUPLICATE_BITS`, ``phash``) in
   any recent check, with or without a face. The result is a :class:`~server.models.FaceVerdict`
   row (data for validation) and alarms: ``face_mismatch`` (the terminal said pass, the server sees another face or
   none), ``same_face_two_ids`` (the face matches the named person and another student too) and
   ``duplicate_photo``.

The re-check runs after the photo's COMMIT: a crash there leaves the photo stored without a verdict, and
:meth:`PhotoIngest.recheck_missing` makes it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from firmware_protocols import topics
from firmware_protocols.errors import ProtocolError
from firmware_protocols.messages import PhotoAck, PhotoStatus, PhotoUpload, is_sha256_hex
from firmware_protocols.records import RecordKind
from server.clock import Clock
from server.db import SessionFactory
from server.models import (
    PHOTO_PENDING,
    PHOTO_STORED,
    TERMINAL_ACTIVE,
    Alarm,
    CheckPhoto,
    Coach,
    FaceVerdict,
    RawRecord,
    Rejection,
    Student,
    Terminal,
    TrainingSession,
)

log = logging.getLogger(__name__)

#: Encodings of two photos closer than this are the same face image (a photo reused, re-encoded or re-captioned).
#: Measured with the shared test faces: one JPEG re-encoded, rescaled or given a caption band 0.06-0.09 from itself;
#: two different photos of one person ≥ 0.13; frames of the shared video 0.4 s apart ≥ 0.25.
NEAR_DUPLICATE_DISTANCE = 0.11
#: Perceptual hashes (biometrics.phash, 64 bits) of two photos this close are the same picture (``phash`` duplicate).
#: Measured (bench/phash_stability.py, 31 photos as evidence JPEGs): re-encoded at quality 50-95, rescaled 0.5-1.5x or
#: re-captioned 0-2 bits from itself; different photos ≥ 14; frames of one video 1 s apart ≥ 4, 2 s ≥ 18. A crop of
#: 8 px moves it up to 14 bits, so a cropped copy is left to the face encoding (``near``). It separates where the
#: face encoding cannot look: a reused photo with no face, or one named under another person.
PHASH_DUPLICATE_BITS = 2
#: Photos held ``pending`` per terminal (their record not stored yet); past this a photo is answered ``pending``
#: without being kept, and the terminal sends it again later (bounded memory and disk for unverified bytes).
MAX_PENDING_PER_TERMINAL = 32
#: Earlier checks of the same person compared for near-duplicates (newest first).
MAX_NEAR_DUPLICATE_SCAN = 2000

ALARM_PHOTO_NOT_NAMED = "photo_not_named"
ALARM_FACE_MISMATCH = "face_mismatch"
ALARM_SAME_FACE_TWO_IDS = "same_face_two_ids"
ALARM_DUPLICATE_PHOTO = "duplicate_photo"
ALARM_FOREIGN_PUBLISH = "foreign_publish"

VERDICT_MATCH, VERDICT_MISMATCH = "match", "mismatch"


@dataclass(frozen=True, slots=True)
class _Named:
    """What the face_check record says about its photo."""

    terminal: str
    chain: int
    seq: int
    at: datetime
    body: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.terminal}/{self.chain}/{self.seq}"


class PhotoIngest:
    """Handles ``up/photos`` messages for one server process (thread-safe: the engine serialises face work)."""

    def __init__(
        self,
        session_factory: SessionFactory,
        clock: Clock,
        *,
        threshold: float | None = None,
        engine: Any = None,
        after_verdict: Callable[[set[int]], object] | None = None,
    ) -> None:
        from biometrics.templates import DEFAULT_MATCH_THRESHOLD

        self._sf = session_factory
        self._clock = clock
        self.threshold = DEFAULT_MATCH_THRESHOLD if threshold is None else threshold
        self._engine = engine
        self._after_verdict = after_verdict  # re-judges the session (ids of ``sessions`` rows) a verdict belongs to
        self._engine_failed = False
        self._engine_lock = threading.Lock()
        self._templates: dict[tuple[str, str], Any] = {}  # (person, template text) → decoded template
        self.timings_ms: list[int] = []  # compute time of the latest re-checks (bounded), for /metrics and benches

    # ------------------------------------------------------------------ the message
    def handle(self, topic: str, payload: bytes) -> PhotoAck | None:
        """One ``up/photos`` message → the ack to publish on ``down/acks`` (None when nothing can be answered)."""
        topic_terminal = topics.terminal_of(topic)
        if topic_terminal is None:
            return None
        try:
            photo = PhotoUpload.decode(payload)
        except ProtocolError as exc:
            log.info("refused a photo from %s: %s", topic_terminal, exc)
            with self._sf() as s, s.begin():
                _bump(s, exc.reason)
            sha = _claimed_sha(payload)
            return None if sha is None else PhotoAck(sha, PhotoStatus.REJECTED, exc.reason)
        if photo.terminal != topic_terminal:
            with self._sf() as s, s.begin():
                _bump(s, "terminal_mismatch")
                self._alarm(s, topic_terminal, ALARM_FOREIGN_PUBLISH, {"photo": photo.sha256, "claims": photo.terminal})
            return PhotoAck(photo.sha256, PhotoStatus.REJECTED, "terminal_mismatch")
        ack, named = self._store(photo)
        if named is not None:
            self._recheck_safely(named, photo.sha256, photo.jpeg)
        return ack

    def _recheck_safely(self, named: _Named, sha: str, jpeg: bytes) -> None:
        """The photo is committed and its ack is due whatever happens here: a failed re-check is logged and left to
        :meth:`recheck_missing`."""
        try:
            self.recheck(named, sha, jpeg)
        except Exception:  # noqa: BLE001 - the stored photo and its ack must not depend on the face engine
            log.exception("face re-check of %s failed; recheck_missing() retries it", named.ref)

    def _store(self, photo: PhotoUpload) -> tuple[PhotoAck, _Named | None]:
        """Store (or hold) the photo in one transaction; (ack, the record to re-check against, if re-check is due)."""
        now = self._clock()

        def answer(status: PhotoStatus, reason: str | None = None) -> PhotoAck:
            return PhotoAck(photo.sha256, status, reason)

        with self._sf() as s, s.begin():
            terminal = s.get(Terminal, photo.terminal)
            if terminal is None or terminal.status != TERMINAL_ACTIVE:
                _bump(s, "unknown_terminal")
                return answer(PhotoStatus.REJECTED, "unknown_terminal"), None
            record = _record_at(s, photo.terminal, photo.chain, photo.seq)
            existing = s.get(CheckPhoto, photo.sha256)
            if record is None:  # the record may still be on its way: hold the photo
                if existing is not None:
                    held_already = existing.status == PHOTO_PENDING
                    return answer(PhotoStatus.PENDING if held_already else PhotoStatus.DUPLICATE), None
                held = s.scalar(select(func.count()).select_from(CheckPhoto).where(
                    CheckPhoto.terminal_id == photo.terminal, CheckPhoto.status == PHOTO_PENDING))  # fmt: skip
                if (held or 0) < MAX_PENDING_PER_TERMINAL:
                    s.add(_photo_row(photo, PHOTO_PENDING, now))
                _bump(s, "photo_pending")
                return answer(PhotoStatus.PENDING), None
            if not _names(record, photo.sha256):
                _bump(s, "not_named")
                self._alarm(s, photo.terminal, ALARM_PHOTO_NOT_NAMED, {"photo": photo.sha256, "chain": photo.chain,
                            "seq": photo.seq, "record_kind": record.kind})  # fmt: skip
                if existing is not None and existing.status == PHOTO_PENDING:
                    s.delete(existing)
                return answer(PhotoStatus.REJECTED, "not_named"), None
            verdict_exists = s.scalar(select(FaceVerdict.id).where(
                FaceVerdict.terminal_id == photo.terminal, FaceVerdict.chain == photo.chain,
                FaceVerdict.seq == photo.seq)) is not None  # fmt: skip
            if existing is None:
                s.add(_photo_row(photo, PHOTO_STORED, now))
                status = PhotoStatus.STORED
            elif existing.status == PHOTO_PENDING:
                existing.status, existing.stored_at = PHOTO_STORED, now
                existing.chain, existing.seq = photo.chain, photo.seq
                status = PhotoStatus.STORED
            else:
                status = PhotoStatus.DUPLICATE  # the same bytes are stored (this record's resend, or another's)
            named = _Named(photo.terminal, record.chain, record.seq, record.at, dict(record.body))
        # COMMIT returned: only now may the ack exist.
        return answer(status), None if verdict_exists else named

    # ------------------------------------------------------------------ pending photos
    def resolve_pending(self) -> list[tuple[str, PhotoAck]]:
        """Pending photos whose record is stored now: stored and re-checked (or refused). Returns the acks to send
        (terminal, ack): the terminal may then delete its copy without sending it again."""
        with self._sf() as s:
            at_record = ((RawRecord.terminal_id == CheckPhoto.terminal_id) & (RawRecord.chain == CheckPhoto.chain)
                         & (RawRecord.seq == CheckPhoto.seq))  # fmt: skip
            due = s.scalars(
                select(CheckPhoto.sha256).join(RawRecord, at_record).where(CheckPhoto.status == PHOTO_PENDING)
            ).all()
        out = []
        for sha in due:  # bytes loaded one photo at a time
            with self._sf() as s:
                row = s.get(CheckPhoto, sha)
                if row is None or row.status != PHOTO_PENDING:
                    continue
                terminal, chain, seq, taken_at, jpeg = row.terminal_id, row.chain, row.seq, row.taken_at, row.jpeg
            photo = PhotoUpload.of(terminal, chain, seq, taken_at, jpeg)
            ack, named = self._store(photo)
            if named is not None:
                self._recheck_safely(named, photo.sha256, photo.jpeg)
            out.append((terminal, ack))
        return out

    def recheck_missing(self) -> int:
        """Re-check stored photos that have no verdict (a crash or an engine failure after their COMMIT)."""
        with self._sf() as s:
            rows = s.execute(
                select(CheckPhoto.sha256, RawRecord.terminal_id, RawRecord.chain, RawRecord.seq, RawRecord.at,
                       RawRecord.body, CheckPhoto.jpeg)
                .join(RawRecord, (RawRecord.terminal_id == CheckPhoto.terminal_id)
                      & (RawRecord.chain == CheckPhoto.chain) & (RawRecord.seq == CheckPhoto.seq))
                .outerjoin(FaceVerdict, (FaceVerdict.terminal_id == RawRecord.terminal_id)
                           & (FaceVerdict.chain == RawRecord.chain) & (FaceVerdict.seq == RawRecord.seq))
                .where(CheckPhoto.status == PHOTO_STORED, FaceVerdict.id.is_(None))
            ).all()  # fmt: skip
        for sha, terminal, chain, seq, at, body, jpeg in rows:
            self._recheck_safely(_Named(terminal, chain, seq, at, dict(body)), sha, jpeg)
        return len(rows)

    # ------------------------------------------------------------------ the server's own face check
    def recheck(self, named: _Named, sha: str, jpeg: bytes) -> FaceVerdict | None:
        """Compare the photo with the named person's enrolment template; write the verdict and its alarms.

        None when there is no face engine (logged once) or another worker wrote the verdict first."""
        if self._engine_or_none() is None:
            return None
        t0 = time.perf_counter()
        body = named.body
        person, role = str(body.get("person") or ""), str(body.get("role") or "student")
        with self._sf() as s:
            school = s.scalar(select(Terminal.school_id).where(Terminal.id == named.terminal))
            people = _people_of_school(s, school)
        claimed = self._template(person, people.get(person, (None, None))[1])
        encoding: Any = None
        verdict, dist, other, other_d = "no_template", None, None, None
        faces, photo_hash = self._faces(jpeg)
        if faces is None:
            verdict = "unreadable"
        elif len(faces) == 0:
            verdict = "no_face"
        elif len(faces) > 1:
            verdict = "several_faces"
        else:
            from biometrics.templates import distance

            encoding = faces[0]
            if claimed is not None:
                dist = distance(encoding, claimed)
                verdict = VERDICT_MATCH if dist < self.threshold else VERDICT_MISMATCH
            others = [(pid, self._template(pid, text)) for pid, (_kind, text) in people.items() if pid != person]
            scored = [(pid, distance(encoding, t)) for pid, t in others if t is not None]
            if scored:
                other, other_d = min(scored, key=lambda x: x[1])
        compute_ms = round((time.perf_counter() - t0) * 1000)
        try:
            with self._sf() as s, s.begin():
                row = self._write_verdict(s, named, sha, person, role, verdict, dist, other, other_d, encoding,
                                          people, compute_ms, photo_hash)  # fmt: skip
        except IntegrityError:  # another worker wrote this record's verdict first: same inputs, same verdict
            return None
        self.timings_ms = [*self.timings_ms[-99:], compute_ms]
        log.info("face re-check %s: %s (distance %s) in %d ms", named.ref, verdict, row.distance, compute_ms)
        self._rejudge(named.terminal, row.session, named if row.duplicate is not None else None)
        return row

    def _rejudge(self, terminal: str, session: str | None, copy: _Named | None = None) -> None:
        """A new verdict is new evidence about its session and, when the photo is a copy checked after a later
        photo of its group, about the group's other sessions (which photo is the original is judged on the whole
        group, :mod:`server.face_evidence`): have them judged again (as ingest does after a batch)."""
        if self._after_verdict is None:
            return
        keys = {(terminal, session)} if session is not None else set()
        with self._sf() as s:
            if copy is not None:
                from server.face_evidence import sessions_to_rejudge

                keys |= sessions_to_rejudge(s, copy.terminal, copy.chain, copy.seq)
            sids = {sid for t, name in sorted(keys) for sid in s.scalars(select(TrainingSession.id).where(
                TrainingSession.terminal_id == t, TrainingSession.session == name))}  # fmt: skip
        if not sids:
            return
        try:
            self._after_verdict(sids)
        except Exception:  # noqa: BLE001 - derived data; recomputed on the next change
            log.exception("re-judging sessions %s after a face verdict failed", sorted(keys))

    def _write_verdict(
        self, s: Session, named: _Named, sha: str, person: str, role: str, verdict: str, dist: float | None,
        other: str | None, other_d: float | None, encoding: Any, people: dict[str, tuple[str, str]], compute_ms: int,
        photo_hash: int | None = None,
    ) -> FaceVerdict:  # fmt: skip
        from biometrics.templates import decode_template, distance

        body = named.body
        duplicate, duplicate_of, duplicate_d = None, None, None
        phash_bits: int | None = None
        first = s.scalar(select(FaceVerdict).where(FaceVerdict.photo_sha256 == sha).order_by(FaceVerdict.id).limit(1))
        if first is not None:
            duplicate, duplicate_of = "exact", f"{first.terminal_id}/{first.chain}/{first.seq}"
        elif encoding is not None:
            earlier = s.execute(
                select(FaceVerdict.terminal_id, FaceVerdict.chain, FaceVerdict.seq, FaceVerdict.encoding)
                .where(FaceVerdict.person_id == person, FaceVerdict.encoding.is_not(None))
                .order_by(FaceVerdict.id.desc()).limit(MAX_NEAR_DUPLICATE_SCAN)
            ).all()  # fmt: skip
            best = min(((f"{t}/{c}/{q}", distance(encoding, decode_template(str(e)))) for t, c, q, e in earlier),
                       key=lambda x: x[1], default=None)  # fmt: skip
            if best is not None and best[1] < NEAR_DUPLICATE_DISTANCE:
                duplicate, duplicate_of, duplicate_d = "near", best[0], best[1]
        if duplicate is None and photo_hash is not None:
            from biometrics.phash import from_hex, hamming

            hashed = s.execute(
                select(FaceVerdict.terminal_id, FaceVerdict.chain, FaceVerdict.seq, FaceVerdict.phash)
                .where(FaceVerdict.phash.is_not(None)).order_by(FaceVerdict.id.desc()).limit(MAX_NEAR_DUPLICATE_SCAN)
            ).all()  # fmt: skip
            closest = min(((f"{t}/{c}/{q}", hamming(photo_hash, from_hex(str(h)))) for t, c, q, h in hashed),
                          key=lambda x: x[1], default=None)  # fmt: skip
            if closest is not None and closest[1] <= PHASH_DUPLICATE_BITS:
                duplicate, duplicate_of = "phash", closest[0]
                phash_bits = closest[1]
        alarms: list[str] = []
        detail = {"chain": named.chain, "seq": named.seq, "person": person, "role": role,
                  "session": body.get("session"), "photo": sha, "verdict": verdict, "distance": _milli(dist),
                  "other_person": other, "other_distance": _milli(other_d)}  # fmt: skip
        if body.get("result") == "pass" and verdict in (VERDICT_MISMATCH, "no_face", "several_faces"):
            alarms.append(ALARM_FACE_MISMATCH)
        if (verdict == VERDICT_MATCH and other is not None and other_d is not None and other_d < self.threshold
                and people.get(other, ("", ""))[0] == "student" and role == "student"):  # fmt: skip
            alarms.append(ALARM_SAME_FACE_TWO_IDS)
        if duplicate is not None:
            alarms.append(ALARM_DUPLICATE_PHOTO)
            detail |= {"duplicate": duplicate, "duplicate_of": duplicate_of, "duplicate_distance": _milli(duplicate_d)}
            if phash_bits is not None:
                detail["phash_bits"] = phash_bits
        for kind in alarms:
            self._alarm(s, named.terminal, kind, detail)
        row = FaceVerdict(
            terminal_id=named.terminal, chain=named.chain, seq=named.seq,
            session=body.get("session") if isinstance(body.get("session"), str) else None,
            person_id=person, role=role, trigger=_str_or_none(body.get("trigger")), photo_sha256=sha,
            terminal_result=_str_or_none(body.get("result")), terminal_distance=_int_or_none(body.get("distance")),
            verdict=verdict, distance=_milli(dist), other_person=other, other_distance=_milli(other_d),
            duplicate=duplicate, duplicate_of=duplicate_of, duplicate_distance=_milli(duplicate_d),
            encoding=None if encoding is None else encoding.encode(), alarms=alarms, at=named.at,
            phash=None if photo_hash is None else _phash_hex(photo_hash),
            checked_at=self._clock(), compute_ms=compute_ms,
        )  # fmt: skip
        s.add(row)
        s.flush()
        return row

    def _faces(self, jpeg: bytes) -> tuple[list[Any] | None, int | None]:
        """The face templates in the photo (None: not a readable image) and its perceptual hash (None: not made)."""
        from biometrics.engine import DETECT_WIDTH
        from biometrics.errors import ImageUnreadable

        engine = self._engine_or_none()
        try:
            rgb = engine.decode_image(jpeg)
        except ImageUnreadable:
            return None, None
        try:
            from biometrics.phash import phash

            photo_hash: int | None = phash(rgb)
        except ValueError:  # too small to hash
            photo_hash = None
        # Detection on a downscaled copy (as the terminal does), encodings on the full photo inside the boxes:
        # ~5x cheaper than detecting at full size with an upsample, for the same faces on a 640 px photo.
        boxes = engine.locate(rgb, detect_width=DETECT_WIDTH)
        return (list(engine.encode_at(rgb, boxes)) if boxes else []), photo_hash

    def _engine_or_none(self) -> Any:
        with self._engine_lock:
            if self._engine is None and not self._engine_failed:
                from biometrics.engine import FaceEngine
                from biometrics.errors import EngineUnavailable

                try:
                    self._engine = FaceEngine()
                except EngineUnavailable as exc:
                    self._engine_failed = True
                    log.error("server face re-checks are off: %s", exc)
            return self._engine

    def _template(self, person: str, text: str | None) -> Any:
        if text is None:
            return None
        key = (person, text)
        if key not in self._templates:
            from biometrics.errors import TemplateDecodeError
            from biometrics.templates import decode_template

            try:
                self._templates[key] = decode_template(text)
            except TemplateDecodeError:
                self._templates[key] = None
            if len(self._templates) > 50_000:  # bounded: re-enrolments leave old keys behind
                self._templates.clear()
        return self._templates.get(key)

    def _alarm(self, s: Session, terminal: str | None, kind: str, detail: dict[str, Any]) -> None:
        log.warning("alarm %s on terminal %s: %s", kind, terminal, json.dumps(detail)[:300])
        s.add(Alarm(kind=kind, terminal_id=terminal, detail=detail, at=self._clock(), acknowledged=False))


# ---------------------------------------------------------------------- one PhotoIngest per Ingestor

_BY_OWNER: weakref.WeakKeyDictionary[Any, PhotoIngest] = weakref.WeakKeyDictionary()
_BY_OWNER_LOCK = threading.Lock()


def photo_ingest_of(owner: Any, session_factory: SessionFactory, clock: Clock) -> PhotoIngest:
    """The :class:`PhotoIngest` that serves ``owner`` (an ``Ingestor``): made on first use, so that the face engine
    loads once per process and only when a photo comes."""
    with _BY_OWNER_LOCK:
        found = _BY_OWNER.get(owner)
        if found is None:
            # the ingestor's own after-commit work (the ledger) re-judges the session a verdict belongs to
            found = _BY_OWNER[owner] = PhotoIngest(session_factory, clock,
                                                   after_verdict=getattr(owner, "_after_commit", None))  # fmt: skip
        return found


def use_photo_ingest(owner: Any, photos: PhotoIngest) -> None:
    """Give ``owner`` a configured :class:`PhotoIngest` (threshold, engine) instead of the default one."""
    with _BY_OWNER_LOCK:
        _BY_OWNER[owner] = photos


# ---------------------------------------------------------------------- helpers


def _record_at(s: Session, terminal: str, chain: int, seq: int) -> RawRecord | None:
    return s.scalar(select(RawRecord).where(RawRecord.terminal_id == terminal, RawRecord.chain == chain,
                                            RawRecord.seq == seq))  # fmt: skip


def _names(record: RawRecord, sha: str) -> bool:
    return record.kind == str(RecordKind.FACE_CHECK) and record.body.get("photo") == sha


def _photo_row(photo: PhotoUpload, status: str, now: datetime) -> CheckPhoto:
    return CheckPhoto(sha256=photo.sha256, terminal_id=photo.terminal, chain=photo.chain, seq=photo.seq, status=status,
                      jpeg=photo.jpeg, size=len(photo.jpeg), taken_at=photo.at, received_at=now,
                      stored_at=now if status == PHOTO_STORED else None)  # fmt: skip


def _people_of_school(s: Session, school: str | None) -> dict[str, tuple[str, str]]:
    """person id → (kind, enrolment template text) of a school's coaches and students."""
    if school is None:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for pid, text in s.execute(select(Coach.id, Coach.face_template).where(Coach.school_id == school)):
        out[pid] = ("coach", text)
    for pid, text in s.execute(select(Student.id, Student.face_template).where(Student.school_id == school)):
        out[pid] = ("student", text)
    return out


def _claimed_sha(payload: bytes) -> str | None:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    sha = obj.get("sha256") if isinstance(obj, dict) else None
    return sha if is_sha256_hex(sha) else None


def _phash_hex(h: int) -> str:
    from biometrics.phash import to_hex

    return to_hex(h)


def _milli(x: float | None) -> int | None:
    return None if x is None else round(x * 1000)


def _int_or_none(x: object) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _str_or_none(x: object) -> str | None:
    return x if isinstance(x, str) else None


def _bump(s: Session, reason: str) -> None:
    row = s.get(Rejection, reason)
    if row is None:
        s.add(Rejection(reason=reason, count=1))
    else:
        row.count += 1


def verdicts_of_session(s: Session, terminal: str, session: str) -> Iterable[FaceVerdict]:
    """The hook for validation: the server's face verdicts of one session, in chain order."""
    return s.scalars(select(FaceVerdict).where(FaceVerdict.terminal_id == terminal, FaceVerdict.session == session)
                     .order_by(FaceVerdict.chain, FaceVerdict.seq)).all()  # fmt: skip
