"""Schemathesis against the operator API's own OpenAPI document: every operation, generated requests (valid and
not), as the regulator (the widest role), answers no 5xx and every response matches its documented schema's status.

Bounded: a few examples per operation (``MAX_EXAMPLES``), no shrinking past the first failure; the whole module runs
in well under a minute on one core.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, settings

from server import db
from server.api import create_app
from server.api_trust import Trust
from server.broker import init_pki
from server.policy import load_builtin_policy
from server.settings import Settings

ADMIN = "fuzz-admin-token"  # noqa: S105
MAX_EXAMPLES = 25


class NoFaces:
    """A face engine that finds nobody (a fuzzer's bytes are never a face)."""

    def locate(self, image_rgb: Any) -> list[tuple[int, int, int, int]]:
        return []

    def encode_at(self, image_rgb: Any, boxes: list[Any]) -> list[Any]:
        return []


def _app(directory: Path) -> Any:
    url = f"sqlite:///{directory / 'fuzz.db'}"
    db.upgrade(url)
    sf = db.make_session_factory(db.make_engine(url))
    ca = init_pki(directory / "pki", directory / "pki", ["127.0.0.1"])  # provisioning configured, as in production
    return create_app(Settings(admin_token=ADMIN, database_url=url, jwt_key="f" * 48), session_factory=sf,
                      policy=load_builtin_policy("demo"), face_engine=NoFaces(),
                      trust=Trust(ca, None, "127.0.0.1", 8883))  # fmt: skip


_tmp = tempfile.TemporaryDirectory(prefix="jiapei-fuzz-")  # removed at exit
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(Path(_tmp.name)))


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_no_operation_answers_5xx(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {ADMIN}"})
    what = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, what
    if response.status_code >= 400 and case.path.startswith("/api") and case.path != "/api/provision":
        ctype = response.headers.get("content-type") or response.headers.get("Content-Type") or [""]
        assert (ctype[0] if isinstance(ctype, list) else ctype).startswith("application/problem+json"), what
