"""docs/validation.md lists every reason code the server can give, with the right review flag; the API serves them."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from server.validation.reasons import REASONS, REVIEW_REASONS, Reason

DOC = Path(__file__).resolve().parents[2] / "docs" / "validation.md"


def _table() -> dict[str, bool]:
    rows = re.findall(r"^\| `([a-z_]+)` \| [a-z]+ \| .*? \|\s*(yes)?\s*\|$", DOC.read_text(encoding="utf-8"), re.M)
    return {code: flag == "yes" for code, flag in rows}


def test_the_doc_lists_every_reason_code_and_its_review_flag() -> None:
    assert _table() == {str(code): code in REVIEW_REASONS for code in Reason}
    assert set(REASONS) == set(Reason)  # every code has its two texts


def test_the_api_serves_the_codes_with_their_texts(tmp_path: Path) -> None:
    from server.api import create_app
    from server.settings import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", policy="national-2016"))
    with TestClient(app) as api:
        got = {r["code"]: r for r in api.get("/api/reasons").json()}
    assert set(got) == {str(c) for c in Reason}
    assert got["replayed_track"]["review"] and got["replayed_track"]["zh"]
    assert not got["no_fix"]["review"]
