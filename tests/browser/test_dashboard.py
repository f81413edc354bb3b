"""The operators' dashboard in a real browser (Playwright + Debian's Chromium) against a running server (uvicorn on a
free port) whose database was filled by real ingest (tests/operator_world.py): login as each role, the fleet map,
the anomaly review flow end to end, a student's progress, a school's figures and the red/black list.

Screenshots go to docs/screens/dashboard-*.png (1440 px wide, whole page).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_world import MORNING, PASSWORD, World, build_world, free_port_number

from server.api import create_app
from server.settings import Settings
from server.validation.reasons import REASONS

pytestmark = [pytest.mark.browser]

SCREENS = Path(__file__).parents[2] / "docs" / "screens"
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, World]]:
    import uvicorn

    world = build_world(tmp_path_factory.mktemp("dashboard"))
    app = create_app(Settings(database_url=world.url, jwt_key="d" * 48, admin_token="browser-admin"),
                     session_factory=world.sf, policy=world.policy, face_engine=object())  # fmt: skip
    port = free_port_number()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dashboard-server", daemon=True)
    thread.start()
    started = threading.Event()
    while not started.wait(0.05):  # uvicorn sets .started once the socket listens
        if server.started:
            started.set()
        assert thread.is_alive(), "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}", world
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport=VIEWPORT, locale="zh-CN", timezone_id="Asia/Shanghai")
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    # console errors other than a page's own status (a 404 page is a test's expectation, not a fault)
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith(
        "Failed to load resource") else None)  # fmt: skip
    p.on("response", lambda r: errors.append(f"{r.status} {r.url}")
         if r.status >= 400 and r.request.resource_type != "document" else None)  # fmt: skip
    yield p
    context.close()
    assert errors == [], errors  # no script errors, no CSP violations, no asset or photo that failed to load


def login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def shot(page: Any, name: str) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"dashboard-{name}.png"), full_page=True)


@pytest.mark.parametrize(("role", "landing", "heading"), [
    ("regulator", "/dashboard/fleet", "训练车辆"),
    ("admin_a", "/dashboard/schools/{school_a}", "阳光驾校"),
    ("clerk", "/dashboard/eligibility", "考试资格"),
    ("student_a", "/dashboard/students/{student_a}", "科目"),
])  # fmt: skip
def test_login_as_each_role_lands_on_its_page(site: tuple[str, World], page: Any, role: str, landing: str,
                                              heading: str) -> None:  # fmt: skip
    base, world = site
    login(page, base, world.accounts[role])
    assert page.url == base + landing.format(**world.ids)
    assert heading in page.inner_text("main")
    assert page.inner_text("header .who").startswith(world.accounts[role])


def test_a_wrong_password_is_refused_and_pages_need_a_login(site: tuple[str, World], page: Any) -> None:
    base, world = site
    page.goto(f"{base}/dashboard/review")
    assert page.url.startswith(f"{base}/dashboard/login")
    page.fill("input[name=username]", "reg")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "wrong username or password" in page.inner_text(".error-msg")
    shot(page, "login")


def test_tenancy_in_the_pages(site: tuple[str, World], page: Any) -> None:
    base, world = site
    ids = world.ids
    login(page, base, world.accounts["student_a"])
    assert page.goto(f"{base}/dashboard/students/{ids['student_b']}").status == 404  # another student
    assert page.goto(f"{base}/dashboard/review").status == 403  # not a student's page
    login(page, base, world.accounts["admin_b"])
    assert page.goto(f"{base}/dashboard/schools/{ids['school_a']}").status == 404  # another school
    assert page.goto(f"{base}/dashboard/review/{ids['item_a']}").status == 404
    assert page.goto(f"{base}/dashboard/photos/student/{ids['student_a']}").status == 404


def test_fleet_map_shows_the_cars_in_training_over_the_teaching_area(site: tuple[str, World], page: Any) -> None:
    base, world = site
    login(page, base, world.accounts["regulator"])
    page.goto(f"{base}/dashboard/fleet?at={MORNING:%Y-%m-%dT%H:%M:%SZ}")
    cars = page.locator("svg.map g.car")
    assert cars.count() >= 4  # the two honest cars, the two overlapping ones, the teleporting and the parked one
    assert page.locator("svg.map path.area").count() == 2
    assert page.locator("svg.map path.track").count() == cars.count()
    assert page.locator("svg.map g.car.flagged").count() >= 1  # the parked car's minutes are already invalid
    shot(page, "fleet")
    # a school admin sees only its own cars
    login(page, base, world.accounts["admin_b"])
    page.goto(f"{base}/dashboard/fleet?at={MORNING:%Y-%m-%dT%H:%M:%SZ}")
    assert page.locator("svg.map g.car").count() == 1 and page.locator("svg.map path.area").count() == 1


def test_anomaly_review_flow_end_to_end(site: tuple[str, World], page: Any) -> None:
    base, world = site
    ids = world.ids
    login(page, base, world.accounts["regulator"])
    page.click("header nav >> text=异常审核 Review")
    rows = page.locator("#queue tbody tr")
    before = rows.count()
    assert before >= 3 and REASONS["student_overlap"][1] in page.inner_text("#queue")
    shot(page, "review-queue")
    page.click(f"#queue a[href='/dashboard/review/{ids['item_a']}']")
    page.wait_for_load_state("networkidle")
    # the evidence side by side: track with flagged minutes, enrolment photos, the minute table
    assert page.locator(".evidence svg.map circle.dot-bad").count() > 0
    for img in page.locator(".faces img").all():
        assert img.evaluate("i => i.complete && i.naturalWidth > 0")
    assert page.locator("#minutes tbody tr").count() == 40 and page.locator("#minutes tr.bad").count() > 0
    assert page.locator(".facestrip .fc").count() == 40
    shot(page, "review-item")
    page.check("input[value=fail]")
    page.fill("textarea[name=reason]", "同一学员同时出现在两辆车上，卡被共用 · the same student in two cars at once")
    page.click("#decide button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.url.startswith(f"{base}/dashboard/review?done={ids['item_a']}")
    assert f"#{ids['item_a']}" in page.inner_text(".ok-msg")
    assert page.locator(f"#queue a[href='/dashboard/review/{ids['item_a']}']").count() == 0
    assert page.locator("#queue tbody tr").count() == before - 1
    log = httpx.get(f"{base}/api/review/log", headers={"Authorization": "Bearer browser-admin"}).json()
    assert log["ok"] and log["decisions"][-1]["operator"] == "reg" and log["decisions"][-1]["decision"] == "fail"
    page.goto(f"{base}/dashboard/review?status=failed")
    assert page.locator(f"#queue a[href='/dashboard/review/{ids['item_a']}']").count() == 1
    # a school admin reads the evidence but cannot decide
    login(page, base, world.accounts["admin_a"])
    page.goto(f"{base}/dashboard/review")
    first = page.locator("#queue a.open-item").first
    first.click()
    assert page.locator("#decide").count() == 0 and "read-only" in page.inner_text("main")


def test_student_progress_school_figures_ranking_and_eligibility(site: tuple[str, World], page: Any) -> None:
    base, world = site
    ids = world.ids
    login(page, base, world.accounts["student_b"])
    page.goto(f"{base}/dashboard/students/{ids['student_b']}")
    assert page.locator("svg.chart rect.got, svg.chart rect.done").count() == 4
    assert "80 / 960" in (page.locator("svg.chart").first.text_content() or "")  # two 40-minute sessions of part 2
    assert page.locator("#sessions tbody tr").count() == 2
    assert page.locator("svg.chart path.line").count() == 1
    shot(page, "student")
    login(page, base, world.accounts["admin_a"])
    page.goto(f"{base}/dashboard/schools/{ids['school_a']}")
    assert "异常率" in page.inner_text(".figures") and page.locator("#students tbody tr").count() >= 4
    shot(page, "school")
    page.goto(f"{base}/dashboard/ranking")
    ranking = page.inner_text("#ranking")
    assert "阳光驾校" in ranking and "东港驾校" in ranking
    assert page.locator("#ranking tr.row-black, #ranking tr.row-red").count() >= 1
    shot(page, "ranking")
    login(page, base, world.accounts["clerk"])
    assert page.locator("#eligible tbody tr").count() >= 5
    reviews = page.inner_text("#stage-reviews")
    assert "photo_check_failed" in reviews and "3 records back to review" in reviews and "20.0" in reviews
    shot(page, "eligibility")
