"""Who is in front of the camera: capture a frame and compare it with the roster's enrolment templates."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from agent.camera import Camera, CameraUnavailable
from agent.session import FaceOutcome

log = logging.getLogger(__name__)


#: Frames tried before a check fails: a real face turns and blinks, so one bad frame must not refuse a person
#: (the demo clip's frames are 0.39–0.57 from its enrolment photo). Each attempt is a fresh capture.
ATTEMPTS = 3


class IdentityChecker:
    def __init__(self, camera: Camera, engine: Any, threshold: float, attempts: int = ATTEMPTS) -> None:
        self.attempts = attempts
        self.camera = camera
        self.engine = engine  # biometrics.engine.FaceEngine
        self.threshold = threshold
        self._camera_failing = False

    def check(self, candidates: Mapping[str, Any]) -> FaceOutcome:
        """Identify among ``candidates`` (person id → FaceTemplate): the first passing frame, else the last outcome."""
        outcome = FaceOutcome("camera_error", None)
        for _ in range(self.attempts):
            outcome = self._check_once(candidates)
            if outcome.result in ("pass", "camera_error"):
                break
        return outcome

    def _check_once(self, candidates: Mapping[str, Any]) -> FaceOutcome:
        try:
            frame = self.camera.capture()
        except CameraUnavailable as exc:
            if not self._camera_failing:
                log.error("camera unavailable: %s", exc)
            self._camera_failing = True
            return FaceOutcome("camera_error", None)
        self._camera_failing = False
        match = self.engine.identify(frame[:, :, ::-1], candidates, self.threshold)  # BGR → RGB
        if match.faces == 0:
            return FaceOutcome("no_face", None)
        if match.faces > 1:
            return FaceOutcome("several_faces", None)
        if match.person_id is None:
            return FaceOutcome("fail", None, match.distance)
        return FaceOutcome("pass", match.person_id, match.distance)
