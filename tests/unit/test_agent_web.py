"""The coach screen's server side: the page and its strict CSP, protection against other origins, the live status
the screen shows (counted minutes and why not, re-check prompts, summaries, plain-word alerts) and the camera
preview. The browser itself is driven in tests/browser."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from agent.camera import CameraUnavailable, FakeCamera
from agent.keys import load_or_create_key
from agent.runtime import TerminalRuntime
from agent.session import FaceOutcome, TrainingSession
from agent.store import REJECTED, RecordStore
from agent.web import (
    DISK_LOW_BYTES,
    CameraWatch,
    MinuteView,
    course_choices,
    create_app,
    judge_minute,
    judge_run,
    load_strings,
    refusal,
)
from biometrics.liveness import Challenge
from biometrics.templates import FaceTemplate, encode_template
from firmware_protocols.messages import Roster, RosterPerson
from firmware_protocols.nmea import GpsFix

T = "3710000000000001"
SCHOOL = "3711020000000001"
COACH, STUDENT = "3711020000000201", "3711020000000101"
COURSE = "1212120000"
HOST = "testserver"
ORIGIN = f"http://{HOST}"
T0 = datetime(2026, 11, 27, 1, 0, 0, tzinfo=UTC)  # 09:00 Beijing: inside the practical window


def wait_for(what: str, predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)  # polling the runtime's own thread
    raise AssertionError(f"timed out waiting for {what}")


class FakeIdentity:
    """Stands in for IdentityChecker: asks for a blink through ``on_challenge`` and recognises whoever
    ``present`` names (None: nobody in front of the camera)."""

    def __init__(self, camera: Any) -> None:
        self.camera = camera
        self.on_challenge: Any = None
        self.present: str | None = None

    def check(self, candidates: dict[str, Any]) -> FaceOutcome:
        if self.on_challenge is not None:
            self.on_challenge(Challenge.BLINK)
        if self.present is None:
            return FaceOutcome("no_face", None)
        if self.present in candidates:
            return FaceOutcome("pass", self.present, 0.3)
        return FaceOutcome("fail", None, 0.8)


def template(seed: int) -> str:
    return encode_template(FaceTemplate.from_sequence(np.random.default_rng(seed).normal(0, 0.1, 128)))


def noise_frame(seed: int = 1) -> Any:
    return np.random.default_rng(seed).integers(0, 255, (240, 320, 3), dtype=np.uint8)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[SimpleNamespace]:
    key = load_or_create_key(tmp_path)
    store = RecordStore(tmp_path / "records.sqlite", T, key, tmp_path / "chain")
    identity = FakeIdentity(FakeCamera([noise_frame()]))
    machine = TrainingSession(T, recheck_minutes=15, rng=random.Random(5))
    rt = TerminalRuntime(T, store, machine, identity, tmp_path)  # type: ignore[arg-type]
    rt.start()
    rt.on_roster(Roster(T, SCHOOL, T0, (RosterPerson(COACH, "王教练", ("C1",), template(1)),),
                        (RosterPerson(STUDENT, "李学员", ("C1",), template(2)),)))  # fmt: skip
    wait_for("the roster", lambda: rt.roster is not None)
    disk = {"free": 50 * 1024**3}
    app = create_app(rt, allowed_hosts=(HOST,), events_max_s=0.5,
                     disk_usage=lambda _p: SimpleNamespace(free=disk["free"]))  # fmt: skip
    with TestClient(app) as client:
        page = client.get("/").text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert token is not None
        yield SimpleNamespace(rt=rt, store=store, identity=identity, client=client, token=token.group(1), disk=disk)
    rt.stop()
    store.close()


def browser_post(t: SimpleNamespace, path: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
    h = {"origin": ORIGIN, "sec-fetch-site": "same-origin", "x-csrf-token": t.token, **headers}
    return t.client.post(path, json=body or {}, headers=h)


def fix(at: datetime, k: int, speed: float = 8.0) -> GpsFix:
    return GpsFix(at, 35.42, 119.52 + k * 7e-5, 10.0, speed, 90.0, 3, 9, 0.9, True)


# --- the page ---------------------------------------------------------------------------------------------------


def test_the_page_is_chinese_by_default_with_a_strict_csp_and_no_inline_script(terminal: SimpleNamespace) -> None:
    r = terminal.client.get("/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["cross-origin-resource-policy"] == "same-origin"
    assert '<html lang="zh-CN">' in r.text and "教练签到" in r.text and "计时终端" in r.text
    scripts = re.findall(r"<script([^>]*)>", r.text)
    assert scripts and all('src="/static/coach.js"' in s or 'type="application/json"' in s for s in scripts)
    assert "onclick" not in r.text and "style=" not in r.text  # CSP would refuse both
    initial = re.search(r'<script type="application/json" id="initial">(.*?)</script>', r.text, re.S)
    assert initial is not None and json.loads(initial.group(1))["terminal"] == T


def test_english_is_one_tap_away_and_remembered(terminal: SimpleNamespace) -> None:
    r = terminal.client.get("/?lang=en")
    assert '<html lang="en">' in r.text and "Coach sign-in" in r.text
    assert "lang=en" in r.headers["set-cookie"]
    assert '<html lang="en">' in terminal.client.get("/").text  # the cookie keeps it
    assert '<html lang="zh-CN">' in terminal.client.get("/?lang=zh-CN").text


def test_every_string_exists_in_both_languages() -> None:
    strings = load_strings()
    assert set(strings["zh-CN"]) == set(strings["en"])
    js = (Path(__file__).parents[2] / "agent" / "static" / "coach.js").read_text()
    html = (Path(__file__).parents[2] / "agent" / "static" / "coach.html").read_text()
    used = set(re.findall(r"\{\{([a-z_0-9]+)\}\}", html)) | set(re.findall(r"\bt\('([a-z_0-9]*[a-z0-9])'", js))
    assert used <= set(strings["zh-CN"])


def test_static_files_are_served_and_nothing_else(terminal: SimpleNamespace) -> None:
    assert terminal.client.get("/static/coach.js").headers["content-type"].startswith("text/javascript")
    assert terminal.client.get("/static/coach.css").status_code == 200
    assert terminal.client.get("/static/coach.html").status_code == 404
    assert terminal.client.get("/static/..%2Fweb.py").status_code == 404


# --- other origins ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"origin": "http://evil.example", "sec-fetch-site": "cross-site"}, "cross_site"),
        ({"origin": "http://localhost:9999", "sec-fetch-site": "same-site"}, "cross_site"),
        ({"origin": "http://evil.example"}, "foreign_origin"),  # an older browser without Sec-Fetch-*
        ({"origin": "null"}, "foreign_origin"),  # a sandboxed frame or a file:// page
        ({"sec-fetch-site": "same-origin", "x-csrf-token": "guess"}, "bad_csrf_token"),
        ({"origin": ORIGIN, "sec-fetch-site": "same-origin", "x-csrf-token": ""}, "bad_csrf_token"),
    ],
)
def test_a_state_change_from_another_origin_is_refused(
    terminal: SimpleNamespace, headers: dict[str, str], reason: str
) -> None:
    terminal.identity.present = COACH
    r = terminal.client.post("/api/coach/login", json={"person": COACH}, headers=headers)
    assert r.status_code == 403 and r.json()["message"] == reason
    assert terminal.rt.machine.state == "idle"  # nothing happened


def test_a_form_post_is_refused_before_it_reaches_the_agent(terminal: SimpleNamespace) -> None:
    terminal.identity.present = COACH
    r = terminal.client.post("/api/coach/login", content="person=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert terminal.rt.machine.state == "idle"


def test_a_foreign_host_name_is_refused_even_for_reading(terminal: SimpleNamespace) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 is 'same origin' to the browser, not to us."""
    for path in ("/", "/api/status", "/api/camera/preview.jpg"):
        assert terminal.client.get(path, headers={"host": "evil.example:8801"}).status_code == 403


def test_the_page_itself_and_local_tools_may_ask(terminal: SimpleNamespace) -> None:
    terminal.identity.present = COACH
    assert browser_post(terminal, "/api/coach/login", {"person": COACH}).status_code == 200
    assert terminal.client.post("/api/coach/logout", json={}).status_code == 200  # curl, the demo: no browser headers


def test_refusal_rules() -> None:
    json_ct = {"content-type": "application/json", "host": "127.0.0.1:8801"}
    assert refusal("GET", {}, "tok") is None
    assert refusal("POST", json_ct, "tok") is None
    same = {**json_ct, "origin": "http://127.0.0.1:8801", "sec-fetch-site": "same-origin"}
    assert refusal("POST", {**same, "x-csrf-token": "tok"}, "tok") is None
    assert refusal("POST", same, "tok") == "bad_csrf_token"
    other_port = {**same, "origin": "http://127.0.0.1:8802", "x-csrf-token": "tok"}
    assert refusal("POST", other_port, "tok") == "foreign_origin"
    assert refusal("POST", {**json_ct, "content-type": "application/x-www-form-urlencoded"}, "tok") == "not_json"


# --- what the screen shows ----------------------------------------------------------------------------------------


def test_sign_in_training_recheck_and_sign_out_as_the_screen_sees_them(terminal: SimpleNamespace) -> None:
    rt, client = terminal.rt, terminal.client
    start = T0  # GNSS time, which the terminal follows: 09:00 Beijing
    rt.on_fix(fix(start, 0))
    wait_for("a fix", lambda: rt.last_fix is not None)
    terminal.identity.present = COACH
    r = browser_post(terminal, "/api/coach/login", {"person": None})  # 1:N among the roster's coaches
    assert r.status_code == 200, r.text
    screen = r.json()["status"]["screen"]
    assert screen["coach_name"] == "王教练"
    assert screen["face_check"]["challenge"] == "blink" and screen["face_check"]["result"] == "pass"

    terminal.identity.present = None
    r = browser_post(terminal, "/api/student/login", {"person": STUDENT, "course": COURSE})
    assert r.status_code == 409 and r.json()["reason"] == "face_no_face"
    terminal.identity.present = STUDENT
    r = browser_post(terminal, "/api/student/login", {"person": STUDENT, "course": COURSE})
    assert r.status_code == 200, r.text
    # Three minutes driving, then two standing still: the second still minute makes both not count.
    begin = datetime.fromisoformat(r.json()["status"]["screen"]["session"]["started"])
    k = 0
    for s in range(1, 5 * 60 + 61):
        speed = 8.0 if s < 3 * 60 + 60 - begin.second else 0.0
        k += speed > 0
        rt.on_fix(fix(begin + timedelta(seconds=s), k, speed))
    wait_for("five minutes", lambda: rt.machine.minutes_recorded >= 5)
    session = client.get("/api/status").json()["screen"]["session"]
    assert session["student_name"] == "李学员" and session["course"] == COURSE and session["part"] == 2
    assert session["minutes"]["recorded"] >= 5
    assert session["minutes"]["counted"] == session["minutes"]["recorded"] - 2
    assert [r["reason"] for r in session["not_counting"]] == ["stationary"]
    assert session["today"] == session["minutes"] and session["part_total"] == session["minutes"]
    assert session["distance_m"] > 100
    assert 0 < session["next_check_within_s"] <= 15 * 60

    # A random re-check: the runtime's face worker runs it and the screen shows it with its challenge.
    rt._face_jobs.put(SimpleNamespace(role="student", person=STUDENT, trigger="random"))  # as the machine asks
    wait_for("the re-check", lambda: (client.get("/api/status").json()["screen"]["face_check"] or {})
             .get("trigger") == "random")  # fmt: skip
    check = client.get("/api/status").json()["screen"]["face_check"]
    assert check["challenge"] == "blink" and check["role"] == "student"

    r = browser_post(terminal, "/api/student/logout")
    assert r.status_code == 200
    summary = r.json()["status"]["screen"]["summary"]
    assert r.json()["status"]["screen"]["session"] is None
    assert summary["student_name"] == "李学员" and summary["minutes"]["recorded"] >= 5
    assert summary["checks"]["passed"] >= 1 and summary["duration_s"] >= 5 * 60
    # Signing out is never refused (the hours must end); a face that is not the coach's is recorded as such.
    r = browser_post(terminal, "/api/coach/logout")
    assert r.status_code == 200 and r.json()["face"]["result"] == "fail"
    assert r.json()["status"]["state"] == "idle"


def test_a_students_earlier_minutes_count_toward_today_and_the_part(terminal: SimpleNamespace) -> None:
    rt = terminal.rt
    start = T0  # GNSS time, which the terminal follows: 09:00 Beijing
    rt.on_fix(fix(start, 0))
    wait_for("a fix", lambda: rt.last_fix is not None)
    at = start
    for _ in range(2):
        terminal.identity.present = COACH
        if rt.machine.state == "idle":
            assert browser_post(terminal, "/api/coach/login", {"person": COACH}).status_code == 200
        terminal.identity.present = STUDENT
        assert browser_post(terminal, "/api/student/login", {"person": STUDENT, "course": COURSE}).status_code == 200
        before = rt.machine.minutes_recorded
        for s in range(1, 200):
            at += timedelta(seconds=1)
            rt.on_fix(fix(at, s))
        wait_for("minutes", lambda b=before: rt.machine.minutes_recorded >= b + 2)
        session = terminal.client.get("/api/status").json()["screen"]["session"]
        assert browser_post(terminal, "/api/student/logout").status_code == 200
    assert session["today"]["recorded"] > session["minutes"]["recorded"]
    assert session["part_total"]["counted"] == session["today"]["counted"]


def test_alerts_speak_of_gps_camera_storage_and_a_revoked_terminal(terminal: SimpleNamespace) -> None:
    alerts = terminal.client.get("/api/status").json()["screen"]["alerts"]
    assert "no_gps" in alerts  # no fix yet
    terminal.disk["free"] = DISK_LOW_BYTES - 1
    terminal.identity.camera.set_frames([np.zeros((240, 320, 3), np.uint8)])  # a hand over the lens
    wait_for("the covered lens to show", lambda: terminal.client.get("/api/camera/preview.jpg").status_code == 200
             and "camera_covered" in terminal.client.get("/api/status").json()["screen"]["alerts"])  # fmt: skip
    terminal.rt.on_fix(fix(datetime.now(UTC), 0))
    wait_for("a fix", lambda: terminal.rt.last_fix is not None)
    head = terminal.store.head()
    terminal.store.mark(head[0], head[1], head[2], REJECTED, "terminal_revoked")
    alerts = terminal.client.get("/api/status").json()["screen"]["alerts"]
    assert alerts[0] == "terminal_revoked" and "camera_covered" in alerts and "disk_low" in alerts
    assert "no_gps" not in alerts
    strings = load_strings()
    for code in alerts:
        assert strings["zh-CN"][f"alert_{code}_title"] and strings["en"][f"alert_{code}_do"]


def test_the_event_stream_pushes_the_status(terminal: SimpleNamespace) -> None:
    with terminal.client.stream("GET", "/api/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert text.startswith("retry: ") and events and events[0]["terminal"] == T and "screen" in events[0]


# --- pure parts -------------------------------------------------------------------------------------------------


def minute(**over: Any) -> dict[str, Any]:
    body = {"course": COURSE, "max_speed": 300, "distance_m": 400, "fix_count": 60, "vehicle": {"rpm": 1500},
            "face": {"result": "pass"}, "gnss": {"jumps": 0}}  # fmt: skip
    return {**body, **over}


@pytest.mark.parametrize(
    ("over", "at_hour", "reasons"),
    [
        ({}, 1, []),
        ({"fix_count": 3}, 1, ["few_fixes"]),
        ({"vehicle": {"rpm": 0}}, 1, ["engine_off"]),
        ({"vehicle": None}, 1, []),  # no vehicle signal: the rpm rule is not applied
        ({"face": {"result": "fail"}}, 1, ["face_failed"]),
        ({"gnss": {"jumps": 1}}, 1, ["gps_jump"]),
        ({}, 14, ["outside_hours"]),  # 22:00 Beijing
    ],
)
def test_why_a_minute_would_not_count(over: dict[str, Any], at_hour: int, reasons: list[str]) -> None:
    at = datetime(2026, 11, 27, at_hour, 0, tzinfo=UTC)
    assert judge_minute(minute(**over), at, None).reasons == reasons


def test_standing_still_counts_from_the_second_minute_and_marks_both() -> None:
    still = minute(max_speed=0, distance_m=0)
    run = judge_run([(T0 + timedelta(minutes=i), b) for i, b in enumerate([minute(), still, minute(), still, still])])
    assert [m.counted for m in run] == [True, True, True, False, False]
    assert isinstance(run[0], MinuteView)


def test_courses_follow_the_students_licence_classes() -> None:
    assert course_choices(["C2"]) == ["1222110000", "1222120000", "1222130000", "1223210000"]
    assert course_choices([]) == course_choices(["C1"])


def test_the_camera_watch_tells_covered_from_broken() -> None:
    cam = FakeCamera([np.full((480, 640, 3), 8, np.uint8)])
    now = [0.0]
    watch = CameraWatch(cam, clock=lambda: now[0])
    jpeg = watch.preview()
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8" and watch.state == "covered"
    assert watch.preview() is jpeg and cam.captures == 1  # shared between viewers within the interval
    now[0] += 1
    cam.set_frames([noise_frame()])
    assert watch.preview() is not None and watch.state == "ok"

    class Broken:
        def capture(self) -> Any:
            raise CameraUnavailable("unplugged")

    broken = CameraWatch(Broken(), clock=lambda: now[0])
    assert broken.preview() is None and broken.state == "unavailable"
    assert CameraWatch(None).state == "none"
