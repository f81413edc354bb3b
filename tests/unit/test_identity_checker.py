"""Face checks on the terminal: a missing camera is a clear outcome logged once, a bad frame is retried, and (with
liveness) a frozen picture of the right person fails while a turning head passes."""

from __future__ import annotations

import logging
import random
import socket
from typing import Any

import numpy as np
import pytest
from test_liveness import TURN, live, photo

from agent.camera import FakeCamera, SnapshotCamera
from agent.identity import CheckedFace, IdentityChecker
from agent.session import FaceOutcome
from biometrics.engine import FaceMatch
from biometrics.liveness import FaceSighting, LivenessFrame, LivenessReason
from biometrics.templates import FaceTemplate
from firmware_protocols.envelope import canonical_json


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
    outcome = IdentityChecker(StillCamera(), engine, 0.5, liveness="off").check({"P": object()})
    assert (outcome.result, outcome.person, engine.calls) == ("pass", "P", 2)


def test_a_stranger_fails_after_every_attempt() -> None:
    engine = ScriptedEngine([FaceMatch(1, None, 0.8, "no_match")] * 3)
    outcome = IdentityChecker(StillCamera(), engine, 0.5, liveness="off").check({"P": object()})
    assert (outcome.result, outcome.person, engine.calls) == ("fail", None, 3)


def test_two_faces_in_view_is_its_own_outcome() -> None:
    engine = ScriptedEngine([FaceMatch(2, None, None, "several_faces")] * 3)
    assert IdentityChecker(StillCamera(), engine, 0.5, liveness="off").check({"P": object()}).result == "several_faces"


# --- sequences with liveness -------------------------------------------------------------------------------------


class SequenceEngine:
    """sightings()/encode_at() from synthetic landmark sequences (tests/unit/test_liveness.py's head model): the frame's
    first pixel says which entry of the sequence the camera is showing."""

    def __init__(self, frames: list[LivenessFrame], template: FaceTemplate) -> None:
        self.frames, self.template = frames, template
        self.encoded = 0

    def sightings(self, rgb: Any) -> list[FaceSighting]:
        return list(self.frames[int(rgb[0, 0, 0])].faces)

    def encode_at(self, rgb: Any, boxes: Any) -> list[FaceTemplate]:
        self.encoded += 1
        return [self.template]


def frames_of(seq: list[LivenessFrame]) -> list[np.ndarray]:
    out = []
    for k, f in enumerate(seq):
        img = np.repeat(f.image[:, :, None], 3, axis=2).copy()
        img[0, 0] = k
        out.append(img)
    return out


TEMPLATE = FaceTemplate.from_sequence([0.01] * 128)
OTHER = FaceTemplate.from_sequence([0.1] * 128)


def checker(seq: list[LivenessFrame], mode: str, challenge: str = "head_turn", **kw: Any) -> IdentityChecker:
    return IdentityChecker(FakeCamera(frames_of(seq)), SequenceEngine(seq, TEMPLATE), 0.5, liveness=mode,  # type: ignore[arg-type]
                           challenges=[challenge], interval=0.0, sleep=lambda s: None, **kw)  # fmt: skip


def test_a_turning_head_of_the_claimed_person_passes_with_its_evidence() -> None:
    seen: list[str] = []
    outcome = checker(live(TURN), "enforce", on_challenge=seen.append).check({"P": TEMPLATE})
    assert isinstance(outcome, CheckedFace) and isinstance(outcome, FaceOutcome)
    assert (outcome.result, outcome.person, outcome.distance) == ("pass", "P", 0.0)
    assert outcome.liveness is not None and outcome.liveness.passed and outcome.challenge == "head_turn"
    assert seen == ["head_turn"] and outcome.frames == 12 and outcome.compute_ms is not None
    body = outcome.to_body()
    assert body["result"] == "pass" and body["distance"] == 0 and body["liveness"]["challenge"] == "head_turn"
    canonical_json(body)  # integers only: it can go into a signed record


def test_a_frozen_picture_of_the_right_person_fails_when_enforced() -> None:
    frozen = [live(TURN)[0]] * 12
    engine_checker = checker(frozen, "enforce")
    camera = engine_checker.camera
    assert isinstance(camera, FakeCamera)
    outcome = engine_checker.check({"P": TEMPLATE})
    assert isinstance(outcome, CheckedFace)
    assert (outcome.result, outcome.person) == ("fail", "P")  # the face matched, but it is not alive
    assert outcome.liveness is not None and outcome.liveness.reason is LivenessReason.FROZEN_FRAMES
    assert outcome.to_body()["liveness"]["reason"] == "frozen_frames"
    assert camera.captures == 36  # three attempts of 12 frames


def test_record_mode_measures_liveness_but_decides_on_the_face() -> None:
    outcome = checker(photo(12), "record").check({"P": TEMPLATE})
    assert isinstance(outcome, CheckedFace) and outcome.result == "pass"
    assert outcome.liveness is not None and outcome.liveness.reason is LivenessReason.NO_HEAD_TURN


def test_a_stranger_fails_even_when_alive() -> None:
    outcome = checker(live(TURN), "enforce").check({"P": OTHER})
    assert (outcome.result, outcome.person) == ("fail", None)
    assert outcome.distance is not None and outcome.distance > 0.5


def test_no_face_in_the_sequence() -> None:
    empty = [LivenessFrame(f.image, f.t, ()) for f in live(TURN)]
    assert checker(empty, "enforce").check({"P": TEMPLATE}).result == "no_face"


def test_the_challenge_is_drawn_once_per_check_from_the_rng() -> None:
    seen: list[str] = []
    seq = [live(TURN)[0]] * 12
    c = IdentityChecker(FakeCamera(frames_of(seq)), SequenceEngine(seq, TEMPLATE), 0.5, liveness="enforce",
                        rng=random.Random(7), interval=0.0, sleep=lambda s: None, on_challenge=seen.append)  # fmt: skip
    outcomes = [c.check({"P": TEMPLATE}) for _ in range(6)]
    assert len(seen) == 6 and set(seen) == {"blink", "head_turn"}
    assert [getattr(o, "challenge", None) for o in outcomes] == seen
