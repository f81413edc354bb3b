"""The platform in ``jiapei demo`` (issue 13): the escrow bank simulator, school prices, students enrolling and paying
into escrow, and the releases the exam side's acceptances trigger (the server's platform worker sends them).

Two lines in :class:`jiapei_cli.demo.Demo.start`: ``self.platform = DemoPlatform(self)`` before the server is
spawned (it starts ``jiapei sim bank`` and puts ``JIAPEI_BANK_URL``/``JIAPEI_BANK_SECRET`` into the environment the
server inherits), and ``self.platform.enrol_and_pay()`` after ``self.enrol_people()``. ``summary()`` gives the money.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

import httpx

log = logging.getLogger(__name__)

#: The demo school's price for C1 (fen): ¥4,680.00.
DEMO_PRICE_FEN = 468_000
STUDENT_PASSWORD_BYTES = 12


class DemoPlatform:
    def __init__(self, demo: Any) -> None:
        from jiapei_cli.demo import STARTUP_TIMEOUT_S, free_port, wait_port

        self.demo = demo
        self.logins: dict[str, tuple[str, str]] = {}  # what the demo prints: role → (user name, password)
        self.bank_port = free_port()
        self.secret = secrets.token_urlsafe(24)
        callback = f"http://127.0.0.1:{demo.api_port}/api/bank/callbacks"
        bank = demo.jiapei("bank", "sim", "bank", "--port", str(self.bank_port), "--callback-url", callback,
                           "--secret", self.secret)  # fmt: skip
        wait_port(self.bank_port, STARTUP_TIMEOUT_S, bank, "bank simulator")
        os.environ["JIAPEI_BANK_URL"] = f"http://127.0.0.1:{self.bank_port}"
        os.environ["JIAPEI_BANK_SECRET"] = self.secret

    def enrol_and_pay(self) -> None:
        """The school publishes its price; each demo student gets an account, enrols and pays into escrow."""
        from jiapei_cli.demo import SCHOOL

        base = f"http://127.0.0.1:{self.demo.api_port}/api"
        with self.demo.admin() as api:
            password = secrets.token_urlsafe(STUDENT_PASSWORD_BYTES)
            api.post("/operators", json={"username": "regulator", "password": password,
                                         "role": "regulator"}).raise_for_status()  # fmt: skip
            self.logins["regulator (dashboard)"] = ("regulator", password)
            api.put(f"/schools/{SCHOOL[0]}/offers/C1", json={"price_fen": DEMO_PRICE_FEN}).raise_for_status()
            students = [s["id"] for s in api.get("/students").json()]
            for sid in students:
                password = secrets.token_urlsafe(STUDENT_PASSWORD_BYTES)
                api.post("/operators", json={"username": f"s{sid}", "password": password, "role": "student",
                                             "school": SCHOOL[0], "student": sid}).raise_for_status()  # fmt: skip
                self.logins.setdefault("student (student pages)", (f"s{sid}", password))
                with httpx.Client(base_url=base, timeout=10) as me:
                    token = me.post("/auth/token", data={"username": f"s{sid}", "password": password}).json()
                    me.headers["Authorization"] = f"Bearer {token['access_token']}"
                    e = me.post("/student-enrolments", json={"school": SCHOOL[0]}).json()
                    me.post(f"/student-enrolments/{e['id']}/payments").raise_for_status()
        log.info("%d students enrolled and paid %d fen each into escrow", len(students), DEMO_PRICE_FEN)

    def summary(self) -> dict[str, Any]:
        with self.demo.admin() as api:
            market = api.get("/supervision/market").json()
            ranking = api.get("/ranking").json()
        return {"escrow": {m["school"]: m["escrow_fen"] for m in market},
                "releases": [r for m in market for r in m["recent_releases"]],
                "ranking": [{"school": f["school"], "score": f["score"], "list": f["list"], "terms": f["terms"]}
                            for f in ranking]}  # fmt: skip
