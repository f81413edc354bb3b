"""`jiapei sim fraud` in-process: the fraud scenarios through the real server, reported caught in full (Markdown and
JSON), the clean fleet without a false alarm, and the exit status that says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jiapei_cli.fraud_report import Caught, Control, markdown
from jiapei_cli.main import main


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    rc = main(["sim", "fraud", "--json", *args])
    return rc, json.loads(capsys.readouterr().out)


def summary(scenario: dict[str, Any]) -> tuple[str, int, int, int]:
    """Reason code, suspects, caught, in review queue."""
    return scenario["expected"], scenario["suspects"], scenario["caught"], scenario["in_review"]


def test_record_and_car_tricks_are_caught_and_the_clean_fleet_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_json(capsys, "--only", "teleport", "terminal_swapped", "clean_fleet")
    assert rc == 0 and out["ok"] is True
    by_name = {s["scenario"]: s for s in out["scenarios"]}
    assert set(by_name) == {"teleport", "terminal_swapped"}
    teleport = {**by_name["teleport"], "seconds": 0}
    assert teleport == {"scenario": "teleport", "expected": "teleport", "suspects": 1, "caught": 1, "in_review": 1,
                        "other_codes": ["outside_teaching_area"], "seconds": 0, "error": None, "ok": True}  # fmt: skip
    assert summary(by_name["terminal_swapped"]) == ("foreign_car", 40, 40, 40)
    (clean,) = out["controls"]
    fields = ("scenario", "minutes", "false_alarms", "review_items", "ok")
    assert [clean[k] for k in fields] == ["clean_fleet", 320, 0, 0, True]


def test_the_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    """A scenario picked with --only that has no reason code (a car control) is reported as a control."""
    assert main(["sim", "fraud", "--only", "overlapping_coach", "terminal_own_car"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| scenario | suspects | caught | reason code | other codes seen on the suspects "
                        "| in review queue |")  # fmt: skip
    assert "| overlapping_coach | 40 | 40 | coach_overlap | session_low_valid | 40 |" in lines
    assert "terminal_own_car: 80 minutes, 0 false alarms, 0 review items" in lines
    assert lines[-1].startswith("OK: every scenario caught in full, no false alarm")


def test_a_miss_or_a_false_alarm_fails() -> None:
    missed = Caught("teleport", "teleport", suspects=2, caught=1)
    alarmed = Control("clean_fleet", minutes=320, false_alarms=3, codes=["teleport"])
    assert not missed.ok and not alarmed.ok
    text = markdown([missed, alarmed])
    assert "| teleport | 2 | 1 | teleport | — | 0 |" in text
    assert "clean_fleet: 320 minutes, 3 false alarms (teleport), 0 review items" in text
    assert text.splitlines()[-1].startswith("FAILED")
    skipped = Caught("reused_photo", "?", 0, error="skipped: face engine not usable")
    assert not skipped.ok and "reused_photo: skipped: face engine not usable" in markdown([skipped])


def test_an_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sim", "fraud", "--only", "no_such_trick"])
    assert exc.value.code == 2 and "no_such_trick" in capsys.readouterr().err


def test_a_face_trick_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from biometrics.errors import EngineUnavailable
    from simulators.fraud_faces import STUDENT_CLIP, face_file

    if not face_file(STUDENT_CLIP).exists():
        pytest.skip(f"the shipped demo faces are missing ({face_file(STUDENT_CLIP)})")
    pytest.importorskip("cv2", reason="OpenCV reads the student's clip")
    try:
        from biometrics.engine import FaceEngine

        FaceEngine()
    except (EngineUnavailable, ImportError) as unusable:
        pytest.skip(f"face engine not usable: {unusable}")
    rc, out = run_json(capsys, "--only", "other_person_at_recheck", "--keep", str(tmp_path))
    assert rc == 0 and out["ok"] is True and out["controls"] == []
    (found,) = out["scenarios"]
    assert summary(found) == ("server_face_mismatch", 40, 40, 40)
    assert (tmp_path / "other_person_at_recheck" / "server.db").is_file()  # --keep kept it
    with pytest.raises(SystemExit) as refused:  # and will not feed a second run into the same database
        main(["sim", "fraud", "--only", "other_person_at_recheck", "--keep", str(tmp_path)])
    assert refused.value.code == 2 and "already there" in capsys.readouterr().err
