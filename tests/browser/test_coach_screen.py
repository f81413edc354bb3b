"""The coach's screen in a real browser, against a running agent with simulated car, camera and people.

``jiapei_cli.demo.Demo`` starts the broker, server, exam simulator, one simulated car (GNSS and OBD-II on ptys, a
camera over HTTP) and its agent; the test plays the people in the car (it sets what the camera sees) and the coach's
fingers (Playwright clicks in headless Chromium). It walks idle → coach sign-in (face check with liveness prompt) →
student sign-in (student and course) → training → random face re-check → student sign-out (summary) → coach
sign-out, then an error (covered camera, a sign-in refused), English, and a state change tried from another origin.
Screenshots of each screen go to docs/screens/coach-*.png (1024×600, the training screen also at 800×480).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from jiapei_cli.demo import Demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENS = Path(__file__).parents[2] / "docs" / "screens"
COURSE = "1212120000"  # C1, part 2, field driving: the training ground the simulated car drives
FACTOR = 60.0  # simulated seconds per real second: a 15-minute re-check window passes in 15 s


def wait_for(what: str, predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)  # polling another process's HTTP status: there is no event to wait on
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def car(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    args = argparse.Namespace(duration=None, factor=FACTOR, cars=1, policy="demo", api_port=0,
                              data_dir=tmp_path_factory.mktemp("demo"), database_url=None)  # fmt: skip
    demo = Demo(args)
    try:
        demo.start()
        car = demo.cars[0]
        status = lambda: httpx.get(f"{car['web']}/api/status", timeout=5).json()  # noqa: E731
        wait_for("the roster and a GPS fix", lambda: not {"no_roster", "no_gps"} & set(status()["screen"]["alerts"]),
                 60)  # fmt: skip
        camera = httpx.Client(base_url=demo.fleet["camera_url"], timeout=10)

        def show(scene: dict[str, Any]) -> None:
            camera.post(f"/cameras/{car['name']}/scene", json=scene).raise_for_status()

        def show_person(who: str) -> None:
            live = str(demo.photos[who]["live"])
            show({"video": live} if live.endswith((".mp4", ".avi")) else {"image": live})

        yield {**car, "status": status, "show": show, "show_person": show_person, "dir": demo.dir}
    finally:
        demo.stop.set()
        demo.shutdown()


def shot(page: Any, name: str) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"coach-{name}.png"))


def preview_shown(page: Any, root: str) -> None:
    page.wait_for_function(
        "root => { const img = document.querySelector(root + ' img[data-preview]');"
        " return img && img.complete && img.naturalWidth > 0 && !img.parentElement.classList.contains('off'); }",
        arg=root,
    )


def test_sign_in_training_recheck_and_sign_out(chromium: Any, car: dict[str, Any], tmp_path: Path) -> None:
    coach_id, coach_who = car["coach"]
    student_id, student_who = car["student"]
    context = chromium.new_context(viewport={"width": 1024, "height": 600}, locale="zh-CN", timezone_id="Asia/Shanghai")
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    # Script errors and CSP refusals; a refused request (409, a 503 preview) is an answer, not a problem.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)  # fmt: skip
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(car["web"] + "/")

    # Idle: terminal, GPS, camera, network, storage.
    page.wait_for_selector("#s-idle:not([hidden])")
    page.wait_for_function("() => document.querySelector('[data-tile=gps]').classList.contains('ok')")
    page.wait_for_function("() => document.querySelector('[data-tile=camera]').classList.contains('ok')")
    assert page.locator("#s-idle [data-f=terminal]").inner_text() == car["terminal"]
    shot(page, "idle")

    # Coach sign-in: choose the coach, see the live preview, start the face check, see the liveness prompt.
    car["show_person"](coach_who)
    page.click("[data-act=coach-signin]")
    page.click(f"#s-coach-signin [data-id='{coach_id}']")
    preview_shown(page, "#s-coach-signin")
    assert page.locator(f"#s-coach-signin [data-id='{coach_id}']").get_attribute("class").endswith("chosen")
    shot(page, "signin-coach")
    page.click("#s-coach-signin [data-act=start-coach]")
    page.wait_for_selector("#face:not([hidden])")
    page.wait_for_function("() => ['请眨眨眼', '请慢慢向左右转头'].includes("
                           "document.querySelector('[data-f=face_prompt]').textContent)")  # fmt: skip
    preview_shown(page, "#face")
    shot(page, "face-check")
    page.wait_for_selector("body[data-screen=coach]")
    page.wait_for_selector("#face", state="hidden", timeout=60_000)  # a random re-check may follow
    assert car["status"]()["coach"] == coach_id
    shot(page, "coach-in")

    # Student sign-in: the student from the roster, the course from the picker.
    car["show_person"](student_who)
    page.click("[data-act=student-signin]")
    page.click(f"#s-student-signin [data-id='{student_id}']")
    page.click(f"[data-code='{COURSE}']")
    preview_shown(page, "#s-student-signin")
    shot(page, "signin-student")
    page.click("[data-act=start-student]")
    page.wait_for_selector("body[data-screen=training]")
    page.wait_for_selector("#face", state="hidden", timeout=60_000)  # a random re-check may follow

    # Training: minutes counting, speed, distance, next check, backlog.
    wait_for("counted minutes", lambda: int(page.locator("#s-training [data-f=session_counted]").inner_text()) >= 2, 30)
    page.wait_for_selector("#face", state="hidden", timeout=30_000)  # a re-check may be on screen: let it finish
    assert page.locator("#s-training [data-f=student_name]").inner_text()
    assert COURSE in page.locator("#s-training [data-f=course_label]").inner_text()
    shot(page, "training")
    page.set_viewport_size({"width": 800, "height": 480})
    page.wait_for_timeout(300)  # one layout pass at the new size
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    shot(page, "training-800x480")
    page.set_viewport_size({"width": 1024, "height": 600})

    # Random face re-check, asked by the agent: the prompt comes by itself.
    page.wait_for_selector("#face[data-trigger=random][data-state=running]", timeout=60_000)
    shot(page, "recheck")
    page.wait_for_selector("#face", state="hidden", timeout=30_000)
    assert int(page.locator("#s-training [data-f=session_counted]").inner_text()) >= 2

    # Student sign-out: the summary.
    page.click("[data-act=student-signout]")
    page.wait_for_selector("body[data-screen=summary]")
    page.wait_for_selector("#face", state="hidden", timeout=60_000)  # a random re-check may follow
    assert int(page.locator("[data-f=sum_recorded]").inner_text().split()[0]) >= 2
    shot(page, "signout-summary")

    # Coach sign-out from the summary: back to idle.
    car["show_person"](coach_who)
    page.click("#s-summary [data-act=coach-signout]")
    page.wait_for_selector("body[data-screen=idle]")
    page.wait_for_selector("#face", state="hidden", timeout=60_000)  # a random re-check may follow
    assert car["status"]()["state"] == "idle"

    # Errors in plain words: a covered camera, and the sign-in it makes impossible.
    import cv2

    black = tmp_path / "covered.jpg"
    cv2.imwrite(str(black), np.zeros((480, 640, 3), np.uint8))
    car["show"]({"image": str(black)})
    page.click("[data-act=coach-signin]")
    page.wait_for_selector("[data-alert=camera_covered]")
    page.click("#s-coach-signin [data-act=start-coach]")
    page.wait_for_selector("#message:not([hidden])", timeout=60_000)
    assert "人脸" in page.locator("[data-f=message]").inner_text()
    page.wait_for_selector("#face", state="hidden", timeout=60_000)  # a random re-check may follow
    shot(page, "error")
    page.click("[data-act=message-ok]")
    page.click("#s-coach-signin [data-act=back]")
    car["show"]({"empty": True})

    # English, one tap away.
    page.click("a.lang")
    page.wait_for_selector("html[lang=en]")
    page.wait_for_function(
        "() => document.querySelector('[data-tile=camera]').classList.contains('ok')", timeout=30_000
    )
    assert page.locator("[data-act=coach-signin]").inner_text() == "Coach sign-in"
    shot(page, "idle-en")
    assert not problems, problems
    context.close()


@pytest.fixture
def other_site() -> Iterator[str]:
    """Another local web app (another port of 127.0.0.1: same site, another origin) with a page of its own."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b"<!doctype html><title>another app</title><p>hello"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_another_origin_cannot_sign_anyone_in(chromium: Any, car: dict[str, Any], other_site: str) -> None:
    """A page of another local app tries a simple POST, a JSON POST and a form POST to the agent while the coach is
    in front of the camera: none reaches the session."""
    _, coach_who = car["coach"]
    assert car["status"]()["state"] == "idle"
    car["show_person"](coach_who)
    context = chromium.new_context()
    page = context.new_page()
    page.goto(other_site)
    target = f"{car['web']}/api/coach/login"
    tried = time.monotonic()
    simple = page.evaluate(
        "url => fetch(url, {method: 'POST', mode: 'no-cors', headers: {'content-type': 'text/plain'},"
        " body: JSON.stringify({person: null})}).then(r => r.type, e => 'error: ' + e)", target)  # fmt: skip
    cors = page.evaluate(
        "url => fetch(url, {method: 'POST', headers: {'content-type': 'application/json'},"
        " body: JSON.stringify({person: null})}).then(r => r.status, e => 'blocked')", target)  # fmt: skip
    # The simple POST reaches the agent and is refused there; the JSON one never leaves the browser (its CORS
    # preflight is not granted).
    assert simple == "opaque" and cors == "blocked"
    with page.expect_navigation():
        page.evaluate(
            "url => { const f = document.createElement('form'); f.method = 'POST'; f.action = url;"
            " f.enctype = 'text/plain'; document.body.append(f); f.submit(); }", target)  # fmt: skip
    assert '"reason":"forbidden"' in page.content()
    log = (car["dir"] / f"agent-{car['name']}.log").read_text()
    assert log.count("refused POST /api/coach/login: cross_site") == 2
    status = car["status"]()
    assert status["state"] == "idle" and status["coach"] is None
    check = status["screen"]["face_check"]
    assert check is None or check["age_s"] > time.monotonic() - tried  # not even a face check was started
    context.close()
