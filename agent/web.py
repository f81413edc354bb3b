"""The coach's screen: a touch page served by the agent on localhost, its live event stream and its JSON API (FastAPI).

- ``GET /``: the page, rendered here from ``static/coach.html`` in zh-CN (``?lang=en`` switches, remembered in a
  cookie); ``GET /static/coach.js|coach.css``: its one script and style sheet (no CDN: everything ships here).
- ``GET /api/events``: server-sent events, a ``status`` event at every change and at least once a second;
  ``GET /api/status``: the same object once. ``GET /api/camera/preview.jpg``: a fresh, downscaled snapshot of the
  terminal's camera (the live preview of sign-in and face checks).
- ``POST /api/coach/login`` ``/api/student/login`` ``/api/student/logout`` ``/api/coach/logout``: the page only
  asks; the agent's runtime and session machine decide (faces included).

What the screen shows comes from committed records only (:class:`SessionTally` listens to the runtime after each
COMMIT): minutes counted are the terminal's *estimate* by the national minute audit (:func:`judge_minute`), labelled
as such; the supervision platform decides.

Against other origins (other local pages, DNS rebinding), see :func:`refusal`: every request must name a local host;
a POST must be JSON (a cross-origin page cannot send that without a CORS preflight, which is never granted); a POST
from a browser (it sends ``Origin`` or ``Sec-Fetch-Site``) must come from this very origin and carry the page's CSRF
token; local tools without a browser (the demo's scenario, curl) send neither header. Every response carries
``Cross-Origin-Resource-Policy: same-origin`` and a CSP that allows scripts from this origin only.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.runtime import TerminalRuntime
from agent.store import StoredRecord
from firmware_protocols.errors import ProtocolError
from firmware_protocols.identifiers import BEIJING, CLASS_CODES, CourseCode, beijing_day
from webguard import SecurityHeaders

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"coach.js": "text/javascript; charset=utf-8", "coach.css": "text/css; charset=utf-8"}
LANGS = ("zh-CN", "en")
DEFAULT_LANG = "zh-CN"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

#: Scripts, styles and images from this origin only: no inline script, no eval, no framing.
COACH_PAGE_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: An event stream ends after this long and the browser's EventSource reconnects by itself (after ``retry``): no
#: stream outlives a stopping server by more than this.
EVENTS_MAX_S = 120.0
EVENTS_POLL_S = 0.1
EVENTS_HEARTBEAT_S = 1.0

#: Preview snapshots are taken at most this often, whoever asks (a video-file camera must not be drained).
PREVIEW_MIN_INTERVAL_S = 0.2
PREVIEW_WIDTH = 480
#: Without a preview being watched, the camera is looked at this often to show its state on the idle screen.
CAMERA_PROBE_S = 10.0
#: A frame this dark and this flat is a covered lens (mean and standard deviation of grey levels 0-255).
COVERED_MAX_MEAN, COVERED_MAX_STD = 28.0, 12.0

#: Free space under which the screen warns (a day of records is ~3 MB; photos are bounded by the store).
DISK_LOW_BYTES = 200 * 1024 * 1024
#: A record waiting longer than this for the server's ack means the upload is not getting through.
UPLOAD_STALLED_S = 60.0

# The minute audit as the national-2016 policy has it (server/policies/national-2016.toml). The server judges with
# the policy in force; the terminal's figures are only its estimate for the coach, so they are named here once.
MIN_FIXES_PER_MINUTE = 6
STATIONARY_LIMIT_MINUTES = 2
PRACTICAL_WINDOW = (clock_time(7, 0), clock_time(21, 0))
DAILY_CAP_MINUTES = 240

#: Course items offered by the picker per part (domain.md: 11 basic driving, 12 field driving, 13 part-2 review,
#: 21… road items), for each licence class the student holds.
COURSE_ITEMS: tuple[tuple[int, int], ...] = ((2, 11), (2, 12), (2, 13), (3, 21))


class LoginBody(BaseModel):
    person: str | None = Field(default=None, description="national id to verify 1:1; empty = identify among the roster")


class StudentLoginBody(LoginBody):
    course: str = Field(description="10-digit course code, e.g. 1212130000")


def load_strings() -> dict[str, dict[str, str]]:
    strings: dict[str, dict[str, str]] = json.loads((STATIC / "i18n.json").read_text(encoding="utf-8"))
    return strings


def course_choices(classes: Iterable[str]) -> list[str]:
    """Practical course codes for the picker, for each licence class held (C1 when none is known)."""
    known = [c for c in classes if c in CLASS_CODES] or ["C1"]
    return [str(CourseCode.of(c, part, item)) for c in known for part, item in COURSE_ITEMS]


# --- the minute estimate -----------------------------------------------------------------------------------------


@dataclass
class MinuteView:
    at: datetime
    distance_m: int
    reasons: list[str] = field(default_factory=list)
    stationary: bool = False

    @property
    def counted(self) -> bool:
        return not self.reasons


def judge_minute(body: dict[str, Any], at: datetime, previous: MinuteView | None) -> MinuteView:
    """Why a committed minute record would not count (empty reasons: it counts), by the national minute audit.

    A second stationary minute in a row marks the previous one too (``previous`` is changed in place).
    """
    view = MinuteView(at, int(body.get("distance_m") or 0))
    reasons = view.reasons
    if int(body.get("fix_count") or 0) < MIN_FIXES_PER_MINUTE:
        reasons.append("few_fixes")
    view.stationary = not body.get("max_speed") or not body.get("distance_m")
    if view.stationary and previous is not None and previous.stationary:
        reasons.append("stationary")
        if "stationary" not in previous.reasons:
            previous.reasons.append("stationary")
    vehicle = body.get("vehicle")
    if isinstance(vehicle, dict) and vehicle.get("rpm") == 0:
        reasons.append("engine_off")
    face = body.get("face")
    if isinstance(face, dict) and face.get("result") not in (None, "pass"):
        reasons.append("face_failed")
    gnss = body.get("gnss")
    if isinstance(gnss, dict) and gnss.get("jumps"):
        reasons.append("gps_jump")
    course = body.get("course")
    local = at.astimezone(BEIJING).time()
    if isinstance(course, str) and course.startswith("1") and not PRACTICAL_WINDOW[0] <= local < PRACTICAL_WINDOW[1]:
        reasons.append("outside_hours")
    return view


def judge_run(minutes: Iterable[tuple[datetime, dict[str, Any]]]) -> list[MinuteView]:
    """The minutes of one session, in order."""
    out: list[MinuteView] = []
    for at, body in minutes:
        out.append(judge_minute(body, at, out[-1] if out else None))
    return out


# --- reading the store (the screen's own read-only connection) -----------------------------------------------


class StoreReader:
    """Read-only queries on the agent's record store: its own SQLite connection (WAL lets it read while the runtime
    writes), so that the screen never waits on the store's lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            return list(self._conn.execute(sql, list(args)).fetchall())

    def backlog(self) -> dict[str, Any] | None:
        try:
            ((pending, oldest),) = self._query("SELECT count(*), min(created_at) FROM records WHERE status = 'pending'")
            rejected = self._query("SELECT reason, count(*) FROM records WHERE status = 'rejected' GROUP BY reason")
        except sqlite3.Error as exc:
            log.debug("store not readable for the screen: %s", exc)
            return None
        age = None if oldest is None else (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds()
        return {"pending": int(pending), "oldest_pending_s": None if age is None else round(age),
                "rejected": {str(r): int(n) for r, n in rejected}}  # fmt: skip

    def minutes_of(self, student: str) -> list[tuple[str, datetime, dict[str, Any]]]:
        """(session, at, body) of every minute record of ``student`` in the store, in chain order."""
        try:
            rows = self._query(
                "SELECT at, body FROM records WHERE kind = 'minute' AND json_extract(body, '$.student') = ?"
                " ORDER BY chain, seq",
                [student],
            )
        except sqlite3.Error as exc:
            log.warning("past minutes of %s not readable: %s", student, exc)
            return []
        out = []
        for at, text in rows:
            body = json.loads(text)
            out.append((str(body.get("session")), datetime.fromisoformat(at), body))
        return out


# --- what the screen knows of sessions ---------------------------------------------------------------------------


@dataclass
class SessionView:
    session: str
    student: str
    coach: str | None
    course: CourseCode
    started: datetime
    minutes: list[MinuteView] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: int = 0
    last_random_check: datetime | None = None
    # The student's minutes on this terminal before this session: (recorded, counted) today and for this part.
    prior_today: tuple[int, int] = (0, 0)
    prior_part: tuple[int, int] = (0, 0)
    ended: datetime | None = None


class SessionTally:
    """The running session and the last finished one, fed with committed records by the runtime."""

    def __init__(self, reader: StoreReader | None) -> None:
        self.reader = reader
        self.current: SessionView | None = None
        self.last: SessionView | None = None
        self._lock = threading.Lock()

    def on_record(self, rec: StoredRecord, at: datetime) -> None:
        body = rec.body
        with self._lock:
            cur = self.current
            if rec.kind == "student_login":
                self.current = self._start(body, at)
            elif cur is None or body.get("session") != cur.session:
                return
            elif rec.kind == "minute":
                view = judge_minute(body, at, cur.minutes[-1] if cur.minutes else None)
                today_counted = cur.prior_today[1] + sum(m.counted for m in cur.minutes)
                if view.counted and today_counted >= DAILY_CAP_MINUTES:
                    view.reasons.append("daily_cap")
                cur.minutes.append(view)
            elif rec.kind == "face_check" and body.get("role") == "student":
                if body.get("result") == "pass":
                    cur.checks_passed += 1
                else:
                    cur.checks_failed += 1
                if body.get("trigger") == "random":
                    cur.last_random_check = at
            elif rec.kind == "student_logout":
                cur.ended = at
                self.last, self.current = cur, None

    def _start(self, body: dict[str, Any], at: datetime) -> SessionView:
        course = CourseCode.parse(body.get("course"))
        view = SessionView(str(body.get("session")), str(body.get("student")), body.get("coach"), course, at)
        if self.reader is None:
            return view
        by_session: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}
        for session, m_at, m_body in self.reader.minutes_of(view.student):
            if session != view.session:
                by_session.setdefault(session, []).append((m_at, m_body))
        today, part = [0, 0], [0, 0]
        for minutes in by_session.values():
            for m, (_, m_body) in zip(judge_run(minutes), minutes, strict=True):
                try:
                    code = CourseCode.parse(m_body.get("course"))
                except ProtocolError:
                    continue
                if beijing_day(m.at) == beijing_day(at):
                    today[0] += 1
                    today[1] += m.counted and today[1] < DAILY_CAP_MINUTES
                if (code.class_code, code.part) == (course.class_code, course.part):
                    part[0] += 1
                    part[1] += m.counted
        view.prior_today, view.prior_part = (today[0], today[1]), (part[0], part[1])
        return view

    def view(self, now: datetime, recheck: timedelta, names: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            return {"session": None if self.current is None else _session_json(self.current, now, recheck, names),
                    "summary": None if self.last is None else _summary_json(self.last, now, names)}  # fmt: skip


def _counts(s: SessionView) -> tuple[int, int]:
    return len(s.minutes), sum(m.counted for m in s.minutes)


def _reasons(minutes: list[MinuteView]) -> list[dict[str, Any]]:
    """Why minutes did not count: each reason with how many minutes and the latest one's time."""
    out: dict[str, dict[str, Any]] = {}
    for m in minutes:
        for r in m.reasons:
            out[r] = {"reason": r, "minutes": out.get(r, {}).get("minutes", 0) + 1, "last": m.at.isoformat()}
    return sorted(out.values(), key=lambda x: str(x["last"]), reverse=True)


def _session_json(s: SessionView, now: datetime, recheck: timedelta, names: dict[str, str]) -> dict[str, Any]:
    recorded, counted = _counts(s)
    # The next random face check: only the end of the window it falls in (its moment must stay unknown).
    k = max(0, int((now - s.started) / recheck)) if recheck.total_seconds() > 0 else 0
    window_start, deadline = s.started + k * recheck, s.started + (k + 1) * recheck
    if s.last_random_check is not None and s.last_random_check >= window_start:
        deadline += recheck
    return {
        "session": s.session, "student": s.student, "student_name": names.get(s.student), "coach": s.coach,
        "coach_name": names.get(s.coach or ""), "course": str(s.course), "part": s.course.part,
        "started": s.started.isoformat(), "elapsed_s": max(0, round((now - s.started).total_seconds())),
        "minutes": {"recorded": recorded, "counted": counted},
        "today": {"recorded": s.prior_today[0] + recorded,
                  "counted": min(DAILY_CAP_MINUTES, s.prior_today[1] + counted)},
        "part_total": {"recorded": s.prior_part[0] + recorded, "counted": s.prior_part[1] + counted},
        "distance_m": sum(m.distance_m for m in s.minutes),
        "last_minute": None if not s.minutes else {"at": s.minutes[-1].at.isoformat(),
                                                    "reasons": list(s.minutes[-1].reasons)},
        "not_counting": _reasons(s.minutes),
        "next_check_within_s": max(0, round((deadline - now).total_seconds())),
        "checks": {"passed": s.checks_passed, "failed": s.checks_failed},
    }  # fmt: skip


def _summary_json(s: SessionView, now: datetime, names: dict[str, str]) -> dict[str, Any]:
    recorded, counted = _counts(s)
    ended = s.ended or now
    return {
        "session": s.session, "student": s.student, "student_name": names.get(s.student), "course": str(s.course),
        "part": s.course.part, "started": s.started.isoformat(), "ended": ended.isoformat(),
        "duration_s": round((ended - s.started).total_seconds()), "ended_ago_s": round((now - ended).total_seconds()),
        "minutes": {"recorded": recorded, "counted": counted}, "distance_m": sum(m.distance_m for m in s.minutes),
        "checks": {"passed": s.checks_passed, "failed": s.checks_failed}, "not_counting": _reasons(s.minutes),
    }  # fmt: skip


# --- the camera, as the screen sees it -----------------------------------------------------------------------


class CameraWatch:
    """Preview snapshots (shared by every viewer, at most one capture per :data:`PREVIEW_MIN_INTERVAL_S`) and the
    camera's state: ``ok``, ``covered`` (a dark, flat frame), ``unavailable`` or ``none`` (no camera configured)."""

    def __init__(self, camera: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.camera = camera
        self._clock = clock
        self._lock = threading.Lock()
        self._jpeg: bytes | None = None
        self._at = -1e9
        self.state = "none" if camera is None else "unknown"
        self._probing = False

    def preview(self) -> bytes | None:
        """A JPEG of what the camera sees now (None when it gives nothing)."""
        with self._lock:
            if self._clock() - self._at < PREVIEW_MIN_INTERVAL_S:
                return self._jpeg
            self._jpeg, self._at = self._grab(), self._clock()
            return self._jpeg

    def probe_if_stale(self) -> None:
        """Look at the camera in the background when nobody has for :data:`CAMERA_PROBE_S`."""
        if self.camera is None or self._probing or self._clock() - self._at < CAMERA_PROBE_S:
            return
        self._probing = True

        def probe() -> None:
            try:
                self.preview()
            finally:
                self._probing = False

        threading.Thread(target=probe, name="camera-probe", daemon=True).start()

    def _grab(self) -> bytes | None:
        if self.camera is None:
            return None
        import cv2  # heavy: only when a preview is asked for
        import numpy as np

        from agent.camera import CameraUnavailable

        try:
            frame = self.camera.capture()
        except CameraUnavailable as exc:
            if self.state != "unavailable":
                log.warning("camera preview: %s", exc)
            self.state = "unavailable"
            return None
        h, w = frame.shape[:2]
        if w > PREVIEW_WIDTH:
            frame = cv2.resize(frame, (PREVIEW_WIDTH, round(h * PREVIEW_WIDTH / w)), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        covered = float(np.mean(grey)) <= COVERED_MAX_MEAN and float(np.std(grey)) <= COVERED_MAX_STD
        self.state = "covered" if covered else "ok"
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])
        return bytes(jpeg) if ok else None


# --- protection against other origins ------------------------------------------------------------------------


def host_name(host_header: str) -> str:
    """``127.0.0.1:8801`` → ``127.0.0.1``; ``[::1]:8801`` → ``::1``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def refusal(method: str, headers: dict[str, str], csrf_token: str) -> str | None:
    """Why a state-changing request must be refused (None: it may go on). ``headers``: lower-case names."""
    if method != "POST":
        return None
    site, origin = headers.get("sec-fetch-site"), headers.get("origin")
    if site is not None and site != "same-origin":
        return "cross_site"
    if origin is not None and origin not in (f"http://{headers.get('host', '')}", f"https://{headers.get('host', '')}"):
        return "foreign_origin"
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return "not_json"
    if site is None and origin is None:
        return None  # not a browser: a local tool, which could talk to the agent anyway
    if not secrets.compare_digest(headers.get("x-csrf-token", ""), csrf_token):
        return "bad_csrf_token"
    return None


class LocalOnly:
    """ASGI middleware: refuse requests naming a non-local host (DNS rebinding) and POSTs from other origins; add
    ``Cross-Origin-Resource-Policy: same-origin`` (no other site may embed the camera preview)."""

    def __init__(self, app: ASGIApp, *, hosts: tuple[str, ...], csrf_token: str) -> None:
        self.app, self.hosts, self.csrf_token = app, hosts, csrf_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if host_name(headers.get("host", "")) not in self.hosts:
            reason: str | None = "foreign_host"
        else:
            reason = refusal(scope.get("method", "GET"), headers, self.csrf_token)
        if reason is not None:
            log.warning("refused %s %s: %s", scope.get("method"), scope.get("path"), reason)
            body = {"ok": False, "reason": "forbidden", "message": reason}
            await JSONResponse(body, status_code=415 if reason == "not_json" else 403)(scope, receive, send)
            return

        async def send_with_corp(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"cross-origin-resource-policy", b"same-origin")]
            await send(message)

        await self.app(scope, receive, send_with_corp)


# --- the page ---------------------------------------------------------------------------------------------------


_PLACEHOLDER = re.compile(r"\{\{(@?)([a-z_0-9]+)\}\}")


def render_page(template: str, strings: dict[str, str], values: dict[str, str]) -> str:
    """``{{key}}`` → the translated string, HTML-escaped; ``{{@name}}`` → ``values[name]``, escaped unless it is
    JSON for a data block (``i18n``, ``initial``), where only ``<`` needs escaping."""

    def fill(m: re.Match[str]) -> str:
        if m.group(1):
            value = values[m.group(2)]
            return value if m.group(2) in ("i18n", "initial") else html.escape(value)
        return html.escape(strings.get(m.group(2), m.group(2)))

    return _PLACEHOLDER.sub(fill, template)


def json_for_html(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False).replace("<", "\\u003c")


def create_app(
    runtime: TerminalRuntime,
    *,
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS,
    events_max_s: float = EVENTS_MAX_S,
    disk_usage: Callable[[Path], Any] = shutil.disk_usage,
) -> FastAPI:
    app = FastAPI(title="jiapei terminal", version="1")
    csrf_token = secrets.token_urlsafe(32)  # per process: a page from before a restart reloads (EventSource retry)
    app.add_middleware(LocalOnly, hosts=allowed_hosts, csrf_token=csrf_token)
    app.add_middleware(SecurityHeaders, csp=COACH_PAGE_CSP)  # outermost: refusals get the headers too
    strings = load_strings()
    template = (STATIC / "coach.html").read_text(encoding="utf-8")
    reader = StoreReader(runtime.store.path)
    tally = SessionTally(reader)
    runtime.record_listeners.append(tally.on_record)
    camera = CameraWatch(None if runtime.identity is None else runtime.identity.camera)

    def screen_status() -> dict[str, Any]:
        status = runtime.status()
        now = datetime.fromisoformat(status["now"])
        roster = runtime.roster
        names = {} if roster is None else {p.id: p.name for p in (*roster.coaches, *roster.students)}
        camera.probe_if_stale()
        backlog = reader.backlog()
        try:
            free = int(disk_usage(runtime.data_dir).free)
        except OSError:
            free = None
        gps = status["gps"]
        link = gps.get("link") or {}
        no_gps = gps["lost"] or gps["mode"] is None or gps["mode"] < 2 or link.get("state") in ("unavailable", "lost")
        rejected = (backlog or {}).get("rejected", {})
        pending = (backlog or {}).get("pending", 0)
        stalled = pending and ((backlog or {}).get("oldest_pending_s") or 0) > UPLOAD_STALLED_S
        alerts = [code for code, on in (
            ("terminal_revoked", "terminal_revoked" in rejected), ("store_failing", status["store_failing"]),
            ("camera_unavailable", camera.state in ("unavailable", "none")),
            ("camera_covered", camera.state == "covered"),
            ("no_gps", no_gps), ("disk_low", free is not None and free < DISK_LOW_BYTES),
            ("no_roster", roster is None), ("offline", bool(stalled)),
            ("records_rejected", bool(rejected) and "terminal_revoked" not in rejected),
        ) if on]  # fmt: skip
        mono = time.monotonic()
        face = runtime.face_check
        status["screen"] = {
            **tally.view(now, runtime.machine.recheck, names),
            "school": None if roster is None else roster.school,
            "coach_name": names.get(runtime.machine.coach or ""),
            "people": {"coaches": [] if roster is None else [{"id": p.id, "name": p.name} for p in roster.coaches],
                       "students": [] if roster is None else [{"id": p.id, "name": p.name, "courses":
                                                               course_choices(p.classes)} for p in roster.students]},
            "face_check": None if face is None else face.to_json(mono),
            "camera": camera.state,
            "network": {"state": "synced" if not pending else "offline" if stalled else "sending",
                        "pending": pending, "rejected": sum(rejected.values())},
            "disk": {"free_bytes": free, "low": free is not None and free < DISK_LOW_BYTES},
            "alerts": alerts,
        }  # fmt: skip
        return status

    def answer(what: str, **kwargs: Any) -> JSONResponse:
        r = runtime.request(what, **kwargs)
        return JSONResponse({"ok": r.ok, "reason": r.reason, "message": r.message, "face": r.face,
                             "status": screen_status()}, status_code=200 if r.ok else 409)  # fmt: skip

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, lang: str | None = None) -> HTMLResponse:
        chosen = lang if lang in LANGS else request.cookies.get("lang")
        chosen = chosen if chosen in LANGS else DEFAULT_LANG
        assert chosen is not None
        initial = screen_status()
        values = {"csrf": csrf_token, "terminal": runtime.terminal, "school": initial["screen"]["school"] or "—",
                  "i18n": json_for_html(strings[chosen]), "initial": json_for_html(initial)}  # fmt: skip
        response = HTMLResponse(render_page(template, strings[chosen], values))
        response.headers["cache-control"] = "no-store"  # it carries the CSRF token of this process
        if lang in LANGS:
            response.set_cookie("lang", chosen, max_age=365 * 86400, samesite="strict", httponly=True)
        return response

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return screen_status()

    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            deadline = time.monotonic() + events_max_s
            seen, sent = -1, 0.0
            while time.monotonic() < deadline and not await request.is_disconnected():
                if runtime.version != seen or time.monotonic() - sent >= EVENTS_HEARTBEAT_S:
                    seen, sent = runtime.version, time.monotonic()
                    body = await run_in_threadpool(screen_status)
                    yield f"event: status\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"
                await asyncio.sleep(EVENTS_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})  # fmt: skip

    @app.get("/api/camera/preview.jpg")
    def preview() -> Response:
        jpeg = camera.preview()
        if jpeg is None:
            return JSONResponse({"ok": False, "reason": f"camera_{camera.state}"}, status_code=503)
        return Response(jpeg, media_type="image/jpeg")

    @app.post("/api/coach/login")
    def coach_login(body: LoginBody) -> JSONResponse:
        return answer("coach_login", person=body.person)

    @app.post("/api/student/login")
    def student_login(body: StudentLoginBody) -> JSONResponse:
        return answer("student_login", person=body.person, course=body.course)

    @app.post("/api/student/logout")
    def student_logout() -> JSONResponse:
        return answer("student_logout")

    @app.post("/api/coach/logout")
    def coach_logout() -> JSONResponse:
        return answer("coach_logout")

    return app
