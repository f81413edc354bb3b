"""The terminal's runtime: one loop thread owns the session state machine and the record store.

GPS fixes, vehicle samples, clock ticks and coach-screen requests all become events on one queue, so the state
machine is only ever touched from one thread and records are appended in the order events happened. Face checks
(camera + face engine, ~0.3 s) run on a worker thread and come back as events.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.gnss_time import FixWatch, GnssClock, TimeEvent
from agent.identity import IdentityChecker
from agent.keys import write_owner_only
from agent.photos import PhotoStore, caption_lines
from agent.session import (
    Action,
    EmitRecord,
    FaceOutcome,
    RequestFaceCheck,
    SessionRefused,
    State,
    TrainingSession,
    VehicleSample,
)
from agent.store import RecordStore, StoredRecord, StoreError
from firmware_protocols.errors import ProtocolError
from firmware_protocols.messages import Roster
from firmware_protocols.nmea import GpsFix
from firmware_protocols.records import RecordKind

log = logging.getLogger(__name__)

#: Records held in memory while the store cannot write (a day of minutes): past this a louder alarm. They are never
#: dropped: losing an hour record is worse than memory.
UNSTORED_ALARM = 1440
TICK_S = 1.0
ROSTER_FILE = "roster.json"


@dataclass(frozen=True, slots=True)
class RequestResult:
    ok: bool
    reason: str | None
    message: str
    face: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FaceCheckView:
    """The face check the screen shows: who, why (``trigger``: a request name or ``random``), the liveness challenge
    the person was asked for, and once done its ``result`` (a records.FaceResult value). Times are monotonic."""

    role: str
    trigger: str
    person: str | None
    started: float
    challenge: str | None = None
    result: str | None = None
    finished: float | None = None

    def to_json(self, mono: float) -> dict[str, Any]:
        return {"role": self.role, "trigger": self.trigger, "person": self.person, "challenge": self.challenge,
                "running": self.result is None, "result": self.result, "age_s": round(mono - self.started, 1),
                "done_ago_s": None if self.finished is None else round(mono - self.finished, 1)}  # fmt: skip


#: Called on the runtime's thread after a record's COMMIT returned (the coach screen counts only what is stored).
RecordListener = Callable[[StoredRecord, datetime], None]


class TerminalRuntime:
    def __init__(
        self,
        terminal: str,
        store: RecordStore,
        machine: TrainingSession,
        identity: IdentityChecker | None,
        data_dir: Path,
        *,
        on_committed: Callable[[], None] = lambda: None,
        photos: PhotoStore | None = None,
    ) -> None:
        self.terminal, self.store, self.machine, self.identity = terminal, store, machine, identity
        self.data_dir = data_dir
        self.on_committed = on_committed
        self.roster: Roster | None = self._load_roster()
        self._templates: dict[str, dict[str, Any]] = self._index_roster(self.roster)
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"runtime-{terminal}", daemon=True)
        self._face_worker = threading.Thread(target=self._face_loop, name=f"faces-{terminal}", daemon=True)
        self._face_jobs: queue.Queue[RequestFaceCheck] = queue.Queue()
        self.clock = GnssClock()  # GNSS time as "now"; offset, clock jumps, GNSS time going backwards
        self.fix_watch = FixWatch(time.monotonic())  # no valid fix for GPS_STALE_S: a gps_lost event record
        self.gps_link: Any = None  # the SerialGpsReader, when attach_gps() was called: its state shows on screen
        self.last_fix: GpsFix | None = None
        self.records_committed = 0
        self.store_errors = 0
        self.store_failing = False
        self._unstored: deque[EmitRecord] = deque()
        self._unstored_alarmed = False
        self.fixes_dropped = 0
        self.face_check: FaceCheckView | None = None  # the latest face check, running or done (coach screen)
        self.version = 0  # bumped whenever something the screen shows changed (requests, records, face checks)
        self.record_listeners: list[RecordListener] = []
        if identity is not None and identity.on_challenge is None:
            identity.on_challenge = self._on_challenge  # the screen tells the person to blink / turn the head
        self.photos = photos  # evidence photos: kept before their record commits, linked to it after
        if photos is not None:
            self.record_listeners.append(self._link_photo)
            if identity is not None and identity.caption is None:
                identity.caption = self._photo_caption

    # --- life cycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        self.store.ensure_genesis(self.now())
        self.on_committed()
        self._thread.start()
        self._face_worker.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # --- inputs (any thread) -----------------------------------------------------------------------------

    def on_fix(self, fix: GpsFix) -> None:
        try:
            self._events.put_nowait(("fix", fix))
        except queue.Full:  # the loop is stuck: say so, do not block the GPS reader
            self.fixes_dropped += 1

    def on_vehicle(self, ignition: bool, rpm: float, speed_kmh: float | None, vin: str | None = None) -> None:
        self._events.put(("vehicle", VehicleSample(ignition, round(rpm), speed_kmh, vin)))

    def on_roster(self, roster: Roster) -> None:
        if roster.terminal != self.terminal:
            log.warning("ignoring a roster for terminal %s", roster.terminal)
            return
        # Face templates are biometric data: owner-only, like the keys.
        write_owner_only(self.data_dir / ROSTER_FILE, roster.encode())
        self._events.put(("roster", roster))

    def request(self, what: str, **kwargs: Any) -> RequestResult:
        """A coach-screen request (coach_login, student_login, student_logout, coach_logout). Blocks until done."""
        role = "coach" if what.startswith("coach") else "student"
        current = {"student_logout": self.machine.student, "coach_logout": self.machine.coach}.get(what)
        face = self._identify(role, kwargs.get("person") or current, what)
        fut: Future[RequestResult] = Future()
        self._events.put(("request", (what, face, kwargs, fut)))
        result = fut.result(timeout=30)
        self.version += 1
        return result

    def attach_gps(self, reader: Any) -> None:
        """Show the GPS reader's link state and counters (its ``status()``) on the coach screen."""
        self.gps_link = reader

    def now(self) -> datetime:
        """GNSS time carried on by the monotonic clock while a fix is fresh (minute boundaries follow it), else the
        terminal clock."""
        return self.clock.now(datetime.now(UTC), time.monotonic()).replace(microsecond=0)

    def gps_status(self) -> dict[str, Any]:
        fix, mono = self.last_fix, time.monotonic()
        age = self.fix_watch.age_s(mono)
        return {
            "lat": None if fix is None else fix.lat, "lon": None if fix is None else fix.lon,
            "speed_mps": None if fix is None else fix.speed_mps, "mode": None if fix is None else fix.mode,
            "sats": None if fix is None else fix.satellites, "hdop": None if fix is None else fix.hdop,
            "lost": self.fix_watch.lost, "lost_count": self.fix_watch.lost_count,
            "fix_age_s": None if age is None else round(age, 1), "time_source": "gnss" if self.clock.gnss_fresh(mono)
            else "terminal", "clock_offset_ms": self.clock.offset_ms, "clock_jumps": self.clock.jumps,
            "gnss_backwards": self.clock.backwards,
            "link": None if self.gps_link is None else self.gps_link.status(),
        }  # fmt: skip

    def status(self) -> dict[str, Any]:
        m = self.machine
        roster = self.roster
        return {
            "terminal": self.terminal, "state": str(m.state), "coach": m.coach, "student": m.student,
            "course": None if m.course is None else str(m.course), "session": m.session_id,
            "minutes": m.minutes_recorded, "now": self.now().isoformat(),
            "gps": self.gps_status(),
            "records": self.store.counts(), "store_failing": self.store_failing, "unstored": len(self._unstored),
            "roster": None if roster is None else {
                "coaches": [{"id": p.id, "name": p.name} for p in roster.coaches],
                "students": [{"id": p.id, "name": p.name} for p in roster.students]},
        }  # fmt: skip

    # --- the loop ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic() + TICK_S
        while not self._stop.is_set():
            try:
                kind, payload = self._events.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                kind, payload = "tick", None
            try:
                self._handle(kind, payload)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    self._time_events(self.clock.on_tick(datetime.now(UTC), time.monotonic()))
                    self._time_events(self.fix_watch.on_tick(time.monotonic(), self.now()))
                    self._execute(self.machine.on_tick(self.now()))
            except Exception:  # the loop must survive anything one event does
                log.exception("event %s failed", kind)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "fix":
            fix: GpsFix = payload
            self.last_fix = fix
            mono = time.monotonic()
            self._time_events(self.clock.on_fix(fix, datetime.now(UTC), mono))
            self._time_events(self.fix_watch.on_fix(fix, mono, self.now()))
            self.machine.note_clock_offset(self.clock.offset_ms)
            self._execute(self.machine.on_fix(fix))
        elif kind == "vehicle":
            self.machine.on_vehicle(payload)
        elif kind == "roster":
            self.roster = payload
            self._templates = self._index_roster(payload)
            log.info("roster: %d coaches, %d students", len(payload.coaches), len(payload.students))
        elif kind == "face_done":
            outcome, at = payload
            self._execute(self.machine.face_check_done(outcome, at))
        elif kind == "request":
            what, face, kwargs, fut = payload
            fut.set_result(self._serve(what, face, kwargs))

    def _serve(self, what: str, face: FaceOutcome, kwargs: dict[str, Any]) -> RequestResult:
        at = self.now()
        m = self.machine
        if self.store_failing and what in ("coach_login", "student_login"):
            return RequestResult(
                False, "store_unwritable", "the record store cannot write (disk full?)", face.to_body()
            )
        try:
            if what == "coach_login":
                actions = m.coach_login(kwargs.get("person") or face.person or "", face, at)
            elif what == "student_login":
                chain, next_seq = self.store.next_position()
                person = kwargs.get("person") or face.person or ""
                if self.roster is not None and person and not self.roster.admits(person, at):
                    # the roster's booking rule (issue 13): no booking of this car now, and no walk-ins
                    return RequestResult(False, "no_booking", "no booking for this car at this time",
                                         face.to_body())  # fmt: skip
                actions = m.student_login(person, kwargs["course"], face, at, next_seq, chain)
            elif what == "student_logout":
                actions = m.student_logout(face, at)
            elif what == "coach_logout":
                actions = m.coach_logout(face, at)
            else:
                return RequestResult(False, "unknown_request", f"unknown request {what}")
        except SessionRefused as exc:
            return RequestResult(False, exc.reason, str(exc), face.to_body())
        except ProtocolError as exc:
            return RequestResult(False, exc.reason, str(exc), face.to_body())
        self._execute(actions)
        state_after = {"coach_login": State.COACH, "student_login": State.TRAINING}.get(what)
        if state_after is not None and m.state is not state_after:
            return RequestResult(False, f"face_{face.result}", "face not recognised as that person", face.to_body())
        return RequestResult(True, None, "ok", face.to_body())

    def _time_events(self, events: list[TimeEvent]) -> None:
        """GPS lost/back, clock jumps, GNSS time going backwards: logged and kept as signed event records."""
        for ev in events:
            log.warning("GPS/time event %s %s", ev.name, ev.details)
            self._execute([EmitRecord(RecordKind.EVENT, ev.at, {"event": ev.name, **ev.details})])

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, EmitRecord):
                self._unstored.append(action)
            elif isinstance(action, RequestFaceCheck):
                self._face_jobs.put(action)
        self._flush()

    def _flush(self) -> None:
        """Append held records in order. A store that cannot write (full disk) keeps them here, loudly, and the
        next tick tries again: a record is neither dropped nor counted before its COMMIT returned."""
        while self._unstored:
            action = self._unstored[0]
            try:
                stored = self.store.append(action)  # committed (synchronous=FULL) before it counts
            except StoreError as exc:
                self.store_errors += 1
                if not self.store_failing:
                    log.error("ALARM: %s; holding %d record(s) in memory and retrying", exc, len(self._unstored))
                self.store_failing = True
                if len(self._unstored) > UNSTORED_ALARM and not self._unstored_alarmed:
                    log.critical("ALARM: %d records wait for the store; free the disk", len(self._unstored))
                    self._unstored_alarmed = True
                return
            self._unstored.popleft()
            if self.store_failing:
                log.warning("record store writable again")
                self.store_failing, self._unstored_alarmed = False, False
            self.records_committed += 1
            self.machine.on_appended(action.kind, stored.seq, stored.body)
            self.on_committed()
            for listener in self.record_listeners:
                try:
                    listener(stored, action.at)
                except Exception:  # a screen's bookkeeping must never stop the records
                    log.exception("record listener failed")
            self.version += 1

    # --- faces -------------------------------------------------------------------------------------------

    def _face_loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._face_jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            outcome = self._identify(job.role, job.person, job.trigger)
            self._events.put(("face_done", (outcome, self.now())))

    def _identify(self, role: str, person: str | None, trigger: str) -> FaceOutcome:
        self.face_check = FaceCheckView(role, trigger, person, time.monotonic())
        self.version += 1
        outcome = self._check_face(role, person)
        jpeg = getattr(outcome, "jpeg", None)
        if self.photos is not None and jpeg is not None:
            self.photos.put(jpeg, self.now())  # before the record naming it commits (a refusal never stops it)
        if self.face_check is not None:
            self.face_check = replace(self.face_check, result=outcome.result, finished=time.monotonic())
        self.version += 1
        return outcome

    def _check_face(self, role: str, person: str | None) -> FaceOutcome:
        if self.identity is None:
            return FaceOutcome("camera_error", None)
        pool = self._templates.get(role, {})
        if not pool:
            return FaceOutcome("fail", None)  # no roster yet: nobody can be recognised
        candidates = {person: pool[person]} if person and person in pool else pool
        try:
            return self.identity.check(candidates)
        except Exception:
            log.exception("face check failed")
            return FaceOutcome("camera_error", None)

    def _link_photo(self, stored: StoredRecord, at: datetime) -> None:
        photo = stored.body.get("photo")
        if self.photos is not None and stored.kind == RecordKind.FACE_CHECK and isinstance(photo, str):
            self.photos.link(photo, stored.chain, stored.seq)

    def _photo_caption(self) -> list[str]:
        """The evidence photo's watermark: school, coach, student (or the person being checked), time, place."""
        m, fix, view = self.machine, self.last_fix, self.face_check
        checked = view.person if view is not None else None
        return caption_lines(terminal=self.terminal, school=None if self.roster is None else self.roster.school,
                             coach=m.coach or (checked if view is not None and view.role == "coach" else None),
                             student=m.student or (checked if view is not None and view.role == "student" else None),
                             at=self.now(), lat=None if fix is None else fix.lat,
                             lon=None if fix is None else fix.lon)  # fmt: skip

    def _on_challenge(self, challenge: Any) -> None:
        """IdentityChecker's hook: the liveness challenge drawn for the running check (shown as 请眨眼 / 请转头)."""
        if self.face_check is not None and self.face_check.result is None:
            self.face_check = replace(self.face_check, challenge=str(challenge))
            self.version += 1

    # --- roster ------------------------------------------------------------------------------------------

    def _load_roster(self) -> Roster | None:
        path = self.data_dir / ROSTER_FILE
        if not path.exists():
            return None
        try:
            return Roster.decode(path.read_bytes())
        except (ProtocolError, OSError, json.JSONDecodeError) as exc:
            log.warning("stored roster unreadable (%s); waiting for the server's", exc)
            return None

    @staticmethod
    def _index_roster(roster: Roster | None) -> dict[str, dict[str, Any]]:
        if roster is None:
            return {}
        from biometrics.templates import decode_template

        out: dict[str, dict[str, Any]] = {"coach": {}, "student": {}}
        for role, people in (("coach", roster.coaches), ("student", roster.students)):
            for p in people:
                try:
                    out[role][p.id] = decode_template(p.face)
                except Exception as exc:  # noqa: BLE001 - one bad template must not hide the others
                    log.warning("roster template of %s unreadable: %s", p.id, exc)
        return out
