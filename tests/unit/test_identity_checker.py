"""Face checks on the terminal: a missing camera is a clear outcome logged once, a bad frame is retried."""

from __future__ import annotations

import logging
import socket
from typing import Any

import numpy as np
import pytest

from agent.camera import SnapshotCamera
from agent.identity import IdentityChecker
from biometrics.engine import FaceMatch


class ScriptedEngine:
    """Answers identify() from a script (the real engine is tested on real photos in tests/integration)."""

    def __init__(self, answers: list[FaceMatch]) -> None:
        self.answers = answers
        self.calls = 0

    def identify(self, image: Any, candidates: Any, threshold: float) -> FaceMatch:
        self.calls += 1
        return self.answers.pop(0)


class StillCamera:
    def capture(self) -> Any:
        return np.zeros((8, 8, 3), np.uint8)

    def close(self) -> None:
        pass


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/snapshot.jpg"  # nothing listens there


def test_a_missing_camera_is_a_camera_error_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    checker = IdentityChecker(SnapshotCamera(dead_url(), timeout=0.5), ScriptedEngine([]), 0.5)
    with caplog.at_level(logging.ERROR, logger="agent.identity"):
        first = checker.check({"3711020000000101": object()})
        second = checker.check({"3711020000000101": object()})
    assert first.result == second.result == "camera_error" and first.person is None
    assert caplog.text.count("camera unavailable") == 1


def test_one_bad_frame_does_not_refuse_a_person() -> None:
    engine = ScriptedEngine([FaceMatch(1, None, 0.52, "no_match"), FaceMatch(1, "P", 0.41, None)])
    outcome = IdentityChecker(StillCamera(), engine, 0.5).check({"P": object()})
    assert (outcome.result, outcome.person, engine.calls) == ("pass", "P", 2)


def test_a_stranger_fails_after_every_attempt() -> None:
    engine = ScriptedEngine([FaceMatch(1, None, 0.8, "no_match")] * 3)
    outcome = IdentityChecker(StillCamera(), engine, 0.5).check({"P": object()})
    assert (outcome.result, outcome.person, engine.calls) == ("fail", None, 3)


def test_two_faces_in_view_is_its_own_outcome() -> None:
    engine = ScriptedEngine([FaceMatch(2, None, None, "several_faces")] * 3)
    assert IdentityChecker(StillCamera(), engine, 0.5).check({"P": object()}).result == "several_faces"
