"""The student's journey in a real browser at phone size (375×667, Chromium): choose a school, enrol, pay into
escrow through the bank simulator (callbacks over HTTP), book a slot, see hours per part with each minute's verdict,
rate a session, file and follow a complaint, withdraw with a refund.

Screenshots go to docs/screens/student-*.png (whole page).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from operator_world import PASSWORD, SCHOOL_A, SCHOOL_B, World, build_world
from platform_world import serve, wait_for
from sqlalchemy import select

from server.api import create_app
from server.escrow.bank import BankClient
from server.models import Coach, Complaint, SchoolOffer, Slot, Terminal
from server.settings import Settings
from simulators.bank import create_app as bank_app

pytestmark = [pytest.mark.browser]

SCREENS = Path(__file__).parents[2] / "docs" / "screens"
PHONE = {"width": 375, "height": 667}
SECRET = "student-pages-bank-secret"  # noqa: S105
NEW_STUDENT = "3711020000009001"
_BANK: dict[str, Any] = {}  # the bank client of the site (the worker's pass in world_release uses it)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, World]]:
    world = build_world(tmp_path_factory.mktemp("student"))
    now = datetime.now(UTC)
    with world.sf() as s, s.begin():
        s.add(SchoolOffer(school_id=SCHOOL_A, licence_class="C1", price_fen=468_000, updated_at=now))
        s.add(SchoolOffer(school_id=SCHOOL_A, licence_class="C2", price_fen=498_000, updated_at=now))
        s.add(SchoolOffer(school_id=SCHOOL_B, licence_class="C1", price_fen=450_000, updated_at=now))
        coach = s.scalar(select(Coach.id).where(Coach.school_id == SCHOOL_B))
        terminal = s.scalar(select(Terminal.id).where(Terminal.school_id == SCHOOL_B))
        tomorrow = (now + timedelta(days=1)).replace(hour=1, minute=0, second=0, microsecond=0)  # 09:00 Beijing
        for i in range(3):
            s.add(Slot(school_id=SCHOOL_B, coach_id=coach, terminal_id=terminal, capacity=1, coach_no_show=False,
                       starts_at=tomorrow + timedelta(hours=2 * i), ends_at=tomorrow + timedelta(hours=2 * i + 1),
                       created_at=now))  # fmt: skip
    settings = Settings(database_url=world.url, jwt_key="s" * 48, admin_token="browser-admin", bank_secret=SECRET)
    app = create_app(settings, session_factory=world.sf, policy=world.policy, face_engine=object())
    with serve(app) as base, serve(bank_app(f"{base}/api/bank/callbacks", SECRET)) as bank_url:
        app.state.bank = BankClient(bank_url)
        _BANK["bank"] = app.state.bank
        yield base, world


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport=PHONE, locale="zh-CN", timezone_id="Asia/Shanghai",
                                   device_scale_factor=2, is_mobile=True, has_touch=True)  # fmt: skip
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("response", lambda r: errors.append(f"{r.status} {r.url}")
         if r.status >= 400 and r.request.resource_type != "document" else None)  # fmt: skip
    yield p
    context.close()
    assert errors == [], errors


def shot(page: Any, name: str) -> None:
    """The whole page; the tab bar (sticky at the bottom of the screen) drawn where it ends up when scrolled down,
    instead of over the middle of a full-page capture."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.add_style_tag(content="nav.tabs { position: static !important; }")
    page.screenshot(path=str(SCREENS / f"student-{name}.png"), full_page=True)


def fits_the_phone(page: Any) -> None:
    """Nothing wider than the screen: no sideways scrolling on a 375 px phone."""
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_new_student_enrols_pays_books_complains_and_withdraws(site: tuple[str, World], page: Any) -> None:
    base, world = site
    page.goto(f"{base}/student/")
    assert page.locator("article.school").count() == 2
    assert "¥4,500.00" in page.inner_text(f"article[data-school='{SCHOOL_B}']")
    fits_the_phone(page)
    shot(page, "1-schools")

    page.click(f"article[data-school='{SCHOOL_B}'] a.btn")
    page.fill("input[name=name]", "陈小明")
    page.fill("input[name=id]", NEW_STUDENT)
    page.fill("input[name=username]", "xiaoming")
    page.fill("input[name=password]", PASSWORD)
    page.check("input[name=consent]")
    fits_the_phone(page)
    shot(page, "2-enrol")
    page.click("button[type=submit]")
    page.wait_for_url("**/student/home**")
    assert "报名成功" in page.inner_text("main")
    page.click("#pay")
    page.wait_for_url("**/student/home**")

    def paid() -> bool:
        page.goto(f"{base}/student/home")
        return "报名确认" in page.inner_text("main") and "拨付驾校" in page.inner_text("ul.ledger")

    world_release(world, base)
    wait_for(paid, timeout=15, what="the bank's callbacks and the enrolment release")
    assert "¥450.00" in page.inner_text("main")  # 10 % released at enrolment
    fits_the_phone(page)
    shot(page, "3-paid")

    page.click("nav.tabs >> text=预约")
    page.click("article.slot >> nth=0 >> button[value=book]")
    page.wait_for_url("**/student/book**")
    assert "预约成功" in page.inner_text("main")
    fits_the_phone(page)
    shot(page, "4-book")

    page.click("nav.tabs >> text=投诉")
    page.fill("input[name=subject]", "教练迟到")
    page.fill("textarea[name=body]", "预约9点，教练9点25分才到，浪费了练车时间。")
    page.click("#file")
    page.wait_for_url("**/student/complaints**")
    with world.sf() as s, s.begin():  # the regulator assigns it, the school answers (API tests cover the roles)
        c = s.scalar(select(Complaint).where(Complaint.student_id == NEW_STUDENT))
        assert c is not None
        from server.platform import complaint_step

        complaint_step(c, "assign", "reg", datetime.now(UTC))
        complaint_step(c, "answer", "admin.b", datetime.now(UTC), text="已核实并批评教育该教练，本次课时顺延补足。")
    page.reload()
    assert "驾校答复" in page.inner_text("main")
    fits_the_phone(page)
    shot(page, "5-complaint")

    page.click("nav.tabs >> text=退学")
    page.fill("textarea[name=reason]", "工作调动，离开日照")
    page.click("#withdraw")
    page.wait_for_url("**/student/withdraw**")

    def refunded() -> bool:
        page.goto(f"{base}/student/withdraw")
        return "¥4,050.00" in page.inner_text(".stats")  # 4,500 paid - 450 released = 4,050 back

    wait_for(refunded, timeout=15, what="the refund")
    fits_the_phone(page)
    shot(page, "7-withdraw")


def world_release(world: World, base: str) -> None:
    """What the server's platform worker does on its schedule: fund and send the enrolment release."""
    del base
    from server.escrow.service import EscrowService

    svc = EscrowService(world.sf, world.policy, _bank_of(world), lambda: datetime.now(UTC))
    for _ in range(50):
        svc.run_once()
        with world.sf() as s:
            from server.models import BankInstruction

            if s.scalar(select(BankInstruction.id).where(BankInstruction.kind == "release",
                                                         BankInstruction.status == "sent")):  # fmt: skip
                return
        import time

        time.sleep(0.1)


def _bank_of(world: World) -> Any:
    return _BANK["bank"]


def test_a_student_sees_hours_per_part_and_why_a_minute_did_not_count(site: tuple[str, World], page: Any) -> None:
    base, world = site
    page.goto(f"{base}/student/login")
    page.fill("input[name=username]", world.accounts["student_a"])
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/student/home**")
    page.click("nav.tabs >> text=学时")
    assert page.locator("section.part").count() == 4
    fits_the_phone(page)
    shot(page, "6-hours")
    page.goto(f"{base}/student/sessions/{world.ids['session_a']}")
    assert page.locator("ul.minutes li").count() > 0
    bad = page.locator("ul.minutes li.bad")
    if bad.count():
        assert "未计入：" in bad.first.inner_text()
    page.click("label[for=s4]")
    page.fill("textarea[name=text]", "教练讲解清楚，车况良好。")
    page.click("#rate")
    page.wait_for_url("**/student/sessions/**")
    assert "感谢评价" in page.inner_text("main") and "★★★★☆" in page.inner_text("main")
    fits_the_phone(page)
    shot(page, "6-session")
