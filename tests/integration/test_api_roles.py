"""Every operator API endpoint against every role: who may call it, and which objects each caller may see.

The matrix below is the specification (server/auth.py's table in tests): ``ROLES`` are the callers, each ``CASE`` an
endpoint with the status every caller gets. ``own``/``other`` objects test tenancy: a student reading another
student, a school admin reading another school, answered 404 as if the object did not exist. Logins are real
(OAuth2 password flow → JWT) on a world built by real ingest (tests/operator_world.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from operator_world import PASSWORD, World, build_world
from sqlalchemy import select

from server.api import create_app
from server.auth import SigningKeyError, load_signing_key
from server.models import OperatorAccount
from server.settings import Settings

ADMIN_TOKEN = "bootstrap-admin-token-for-tests"  # noqa: S105
JWT_KEY = "k" * 48
ROLES = ["anon", "regulator", "admin_a", "admin_b", "clerk", "student_a", "student_b"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("roles"))


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    settings = Settings(admin_token=ADMIN_TOKEN, database_url=world.url, jwt_key=JWT_KEY)
    app = create_app(settings, session_factory=world.sf, policy=world.policy, face_engine=object())
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def tokens(client: TestClient, world: World) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {"anon": {}}
    for role, username in world.accounts.items():
        r = client.post("/api/auth/token", data={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 30 * 60
        out[role] = {"Authorization": f"Bearer {body['access_token']}"}
    return out


# (method, url template, body kind, {role: status}); unlisted roles expect the "else" status.
R, A, AB, C, SA, SB = "regulator", "admin_a", "admin_b", "clerk", "student_a", "student_b"
ALL_OK = {R: 200, A: 200, AB: 200, C: 200, SA: 200, SB: 200}
GET_CASES: list[tuple[str, dict[str, int], int]] = [
    ("/api/auth/me", ALL_OK, 401),
    ("/api/ranking", ALL_OK, 401),
    ("/api/schools", {R: 200, A: 200, AB: 200, C: 200}, 403),
    ("/api/schools/{school_a}", {R: 200, A: 200, AB: 404, C: 200}, 403),
    ("/api/schools/{school_a}/figures", {R: 200, A: 200, AB: 404, C: 200}, 403),
    ("/api/terminals", {R: 200, A: 200, AB: 200}, 403),
    ("/api/terminals/{terminal_a}", {R: 200, A: 200, AB: 404}, 403),
    ("/api/terminals/{terminal_a}/audit", {R: 200, A: 200, AB: 404}, 403),
    ("/api/coaches", {R: 200, A: 200, AB: 200}, 403),
    ("/api/coaches/{coach_a}", {R: 200, A: 200, AB: 404}, 403),
    ("/api/coaches/{coach_a}/photo", {R: 200, A: 200, AB: 404}, 403),
    ("/api/students", {R: 200, A: 200, AB: 200, C: 200}, 403),
    ("/api/students/{student_a}", {R: 200, A: 200, AB: 404, C: 200, SA: 200, SB: 404}, 401),
    ("/api/students/{student_a}/hours", {R: 200, A: 200, AB: 404, C: 200, SA: 200, SB: 404}, 401),
    ("/api/students/{student_a2}", {R: 200, A: 200, AB: 404, C: 200, SA: 404, SB: 404}, 401),
    ("/api/students/{student_a}/photo", {R: 200, A: 200, AB: 404, SA: 200, SB: 404, C: 403}, 401),
    ("/api/sessions", {R: 200, A: 200, AB: 200, SA: 200, SB: 200, C: 403}, 401),
    ("/api/sessions/{session_a}", {R: 200, A: 200, AB: 404, SA: 200, SB: 404, C: 403}, 401),
    ("/api/sessions/{session_a}/minutes", {R: 200, A: 200, AB: 404, SA: 200, SB: 404, C: 403}, 401),
    ("/api/sessions/{session_a}/track", {R: 200, A: 200, AB: 404, SA: 200, SB: 404, C: 403}, 401),
    ("/api/sessions/{session_b}", {R: 200, A: 404, AB: 200, SA: 404, SB: 200, C: 403}, 401),
    ("/api/alarms", {R: 200, A: 200, AB: 200}, 403),
    ("/api/stage-reviews", {R: 200, A: 200, AB: 200, C: 200}, 403),
    ("/api/review/items", {R: 200, A: 200, AB: 200}, 403),
    ("/api/review/items/{item_a}", {R: 200, A: 200, AB: 404}, 403),
    ("/api/review/log", {R: 200}, 403),
    ("/api/operators", {R: 200, A: 200, AB: 200}, 403),
    ("/api/national-terminals", {R: 200}, 403),
]


def _status(expect: dict[str, int], other: int, role: str) -> int:
    if role == "anon":
        return 401
    return expect.get(role, other)


@pytest.mark.parametrize(("url", "expect", "other"), GET_CASES, ids=[c[0] for c in GET_CASES])
def test_reads_by_role_and_tenancy(client: TestClient, tokens: dict[str, dict[str, str]], world: World, url: str,
                                   expect: dict[str, int], other: int) -> None:  # fmt: skip
    got = {role: client.get(url.format(**world.ids), headers=tokens[role]).status_code for role in ROLES}
    assert got == {role: _status(expect, other, role) for role in ROLES}


def test_lists_hold_only_what_the_caller_may_see(client: TestClient, tokens: dict[str, dict[str, str]],
                                                 world: World) -> None:  # fmt: skip
    ids = world.ids

    def get(role: str, url: str, **params: Any) -> Any:
        r = client.get(url, headers=tokens[role], params=params)
        assert r.status_code == 200, r.text
        return r.json()

    assert {s["id"] for s in get("admin_a", "/api/schools")} == {ids["school_a"]}
    assert {s["id"] for s in get("regulator", "/api/schools")} == {ids["school_a"], ids["school_b"]}
    assert {s["school"] for s in get("admin_b", "/api/students")} == {ids["school_b"]}
    assert {s["school"] for s in get("admin_b", "/api/students", school=ids["school_a"])} == set()  # filter ≠ escape
    assert {t["school"] for t in get("admin_a", "/api/terminals")} == {ids["school_a"]}
    assert {s["student"] for s in get("student_a", "/api/sessions")} == {ids["student_a"]}
    assert get("student_a", "/api/sessions", student=ids["student_b"]) == []  # a filter cannot widen the scope
    assert {s["student"] for s in get("student_b", "/api/sessions")} == {ids["student_b"]}
    assert ids["student_b"] not in {i["student"] for i in get("admin_a", "/api/review/items", status="")}
    assert get("admin_b", "/api/review/items") == []
    assert {o["school"] for o in get("admin_a", "/api/operators")} == {ids["school_a"]}
    assert get("student_a", "/api/auth/me") == {"name": "student.a", "role": "student", "school": ids["school_a"],
                                                "student": ids["student_a"]}  # fmt: skip
    photo = client.get(f"/api/students/{ids['student_a']}/photo", headers=tokens["student_a"])
    assert photo.headers["content-type"] == "image/jpeg" and photo.content[:2] == b"\xff\xd8"
    assert "no-store" in photo.headers["cache-control"]


def _student(n: int, school: str) -> dict[str, Any]:
    from biometrics.templates import FaceTemplate, encode_template

    template = encode_template(FaceTemplate.from_sequence([0.01 * n] * 128))
    return {"id": f"P9{school[-4:]}{n:010d}"[:16], "name": f"new {n}", "school": school, "class": "C1",
            "face_template": template}  # fmt: skip


def test_writes_by_role_and_tenancy(client: TestClient, tokens: dict[str, dict[str, str]], world: World) -> None:
    ids = world.ids
    n = iter(range(1, 1000))

    def post(role: str, url: str, body: dict[str, Any]) -> int:
        return client.post(url, json=body, headers=tokens[role]).status_code

    def each(url: str, make: Any) -> dict[str, int]:
        return {role: post(role, url, make(role)) for role in ROLES}

    assert each("/api/schools", lambda r: {"id": f"3711{next(n):012d}", "name": "x"}) == \
        {"anon": 401, R: 201, A: 403, AB: 403, C: 403, SA: 403, SB: 403}  # fmt: skip
    assert each("/api/students", lambda r: _student(next(n), ids["school_a"])) == \
        {"anon": 401, R: 201, A: 201, AB: 403, C: 403, SA: 403, SB: 403}  # fmt: skip
    coach = lambda r: {**_student(next(n), ids["school_a"]), "classes": ["C1"]}  # noqa: E731
    assert each("/api/coaches", coach) == {"anon": 401, R: 201, A: 201, AB: 403, C: 403, SA: 403, SB: 403}
    car = lambda r: {"terminal": f"T9{next(n):014d}", "car_plate": "鲁L7777学", "school": ids["school_a"]}  # noqa: E731
    assert each("/api/enrolments", car) == {"anon": 401, R: 201, A: 201, AB: 403, C: 403, SA: 403, SB: 403}
    decision = {"target_kind": "session", "target": "T000000000000404/none", "decision": "pass", "reason": "seen"}
    assert each("/api/review/decisions", lambda r: decision) == \
        {"anon": 401, R: 404, A: 403, AB: 403, C: 403, SA: 403, SB: 403}  # fmt: skip (404: roles pass, target not)
    revoke = {role: client.post(f"/api/terminals/{ids['terminal_b']}X/revoke", json={"reason": "test"},
                                headers=tokens[role]).status_code for role in ROLES}  # fmt: skip
    assert revoke == {"anon": 401, R: 404, A: 403, AB: 403, C: 403, SA: 403, SB: 403}
    account = lambda role, student: {"username": f"u{next(n)}", "password": PASSWORD, "role": role,  # noqa: E731
                                     "student": student}  # fmt: skip
    assert post("admin_a", "/api/operators", account("student", ids["student_a2"])) == 201
    assert post("admin_a", "/api/operators", account("student", ids["student_b"])) == 403  # another school's student
    assert post("admin_a", "/api/operators", account("regulator", None)) == 403
    assert post("regulator", "/api/operators", account("exam_clerk", None)) == 201
    assert post("clerk", "/api/operators", account("student", ids["student_a"])) == 403
    weak = {**account("exam_clerk", None), "password": "short"}
    assert post("regulator", "/api/operators", weak) == 422


def test_review_decision_by_a_regulator_is_logged_under_its_account(
    client: TestClient, world: World, tokens: dict[str, dict[str, str]]
) -> None:
    ids = world.ids
    body = {"target_kind": "session", "target": ids["item_target"], "decision": "fail", "reason": "shared card"}
    r = client.post("/api/review/decisions", json={**body, "operator": "spoofed"}, headers=tokens["regulator"])
    assert r.status_code == 201 and r.json()["operator"] == "reg"
    log = client.get("/api/review/log", headers=tokens["regulator"]).json()
    assert log["ok"] and log["decisions"][-1]["operator"] == "reg"
    item = client.get(f"/api/review/items/{ids['item_a']}", headers=tokens["regulator"]).json()
    assert item["status"] == "failed"


def test_tokens_expire_are_bound_to_the_key_and_die_with_the_account(
    client: TestClient, world: World, tokens: dict[str, dict[str, str]]
) -> None:
    now = datetime.now(UTC)
    with world.sf() as s:
        account = s.scalar(select(OperatorAccount).where(OperatorAccount.username == "clerk"))
        assert account is not None and account.password_hash.startswith("$argon2id$")
        sub = str(account.id)
    claims = {"sub": sub, "role": "regulator", "iss": "jiapei-server", "iat": now - timedelta(hours=2),
              "exp": now - timedelta(hours=1)}  # fmt: skip
    expired = jwt.encode(claims, JWT_KEY, algorithm="HS256")
    r = client.get("/api/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    forged = jwt.encode({**claims, "exp": now + timedelta(hours=1)}, "x" * 48, algorithm="HS256")
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    unsigned = jwt.encode({**claims, "exp": now + timedelta(hours=1)}, None, algorithm="none")  # type: ignore[arg-type]
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {unsigned}"}).status_code == 401
    # the role comes from the account, not from the token: a clerk's token claiming "regulator" stays a clerk
    claimed = jwt.encode({**claims, "exp": now + timedelta(hours=1)}, JWT_KEY, algorithm="HS256")
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {claimed}"}).json()["role"] == "exam_clerk"
    # disabling an account ends its tokens at once
    r = client.post("/api/operators", json={"username": "temp.clerk", "password": PASSWORD, "role": "exam_clerk"},
                    headers=tokens["regulator"])  # fmt: skip
    assert r.status_code == 201
    token = client.post("/api/auth/token", data={"username": "temp.clerk", "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    assert client.get("/api/auth/me", headers=auth).status_code == 200
    assert client.post(f"/api/operators/{r.json()['id']}/disable", headers=tokens["admin_a"]).status_code == 404
    assert client.post(f"/api/operators/{r.json()['id']}/disable", headers=tokens["regulator"]).status_code == 200
    assert client.get("/api/auth/me", headers=auth).status_code == 401


def test_errors_are_problem_details_and_lists_are_paginated(client: TestClient, world: World,
                                                            tokens: dict[str, dict[str, str]]) -> None:  # fmt: skip
    r = client.get("/api/students/P000000000000999", headers=tokens["regulator"])
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "urn:jiapei:problem:not_found" and body["status"] == 404 and body["title"] == "Not Found"
    assert body["detail"] == "no such student" and body["instance"] == "/api/students/P000000000000999"
    r = client.get("/api/sessions", params={"limit": 0}, headers=tokens["regulator"])
    assert r.status_code == 422 and r.json()["reason"] == "invalid_request" and r.json()["errors"][0]["loc"]
    r = client.get("/api/sessions", headers=tokens["anon"])
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and r.json()["reason"]
    r = client.get("/api/students", params={"limit": 2}, headers=tokens["regulator"])
    total = int(r.headers["x-total-count"])
    assert len(r.json()) == 2 and total > 2 and 'rel="next"' in r.headers["link"] and "offset=2" in r.headers["link"]
    seen = [s["id"] for s in r.json()]
    for offset in range(2, total, 2):
        seen += [s["id"] for s in client.get("/api/students", params={"limit": 2, "offset": offset},
                                             headers=tokens["regulator"]).json()]  # fmt: skip
    assert len(seen) == len(set(seen)) == total


def test_failed_logins_are_rate_limited_and_do_not_tell_users_apart(world: World) -> None:
    app = create_app(Settings(database_url=world.url, jwt_key=JWT_KEY), session_factory=world.sf, policy=world.policy)
    with TestClient(app) as c:
        unknown = c.post("/api/auth/token", data={"username": "nobody", "password": "x" * 12})
        wrong = c.post("/api/auth/token", data={"username": "reg", "password": "x" * 12})
        assert unknown.status_code == wrong.status_code == 401 and unknown.json()["detail"] == wrong.json()["detail"]
        codes = [c.post("/api/auth/token", data={"username": "reg", "password": "y" * 12}).status_code
                 for _ in range(10)]  # fmt: skip
        assert codes[-1] == 429
        # the right password from the same address waits too: guessing cannot be interleaved with a real login
        assert c.post("/api/auth/token", data={"username": "reg", "password": PASSWORD}).status_code == 429


def test_the_signing_key_comes_from_a_private_file_or_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_text("s" * 48)
    key.chmod(0o644)
    with pytest.raises(PermissionError):
        load_signing_key(Settings(jwt_key_file=str(key)))
    key.chmod(0o600)
    assert load_signing_key(Settings(jwt_key_file=str(key))) == b"s" * 48
    with pytest.raises(SigningKeyError):
        load_signing_key(Settings(jwt_key="short"))
    assert len(load_signing_key(Settings(jwt_key=None, jwt_key_file=None))) >= 32  # none: random, this process only
