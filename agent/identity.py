"""Who is in front of the camera: capture a short frame sequence, compare the face with the claimed person's enrolment
template (1:1; 1:N among the roster when nobody is named) and judge liveness on the same frames.

One check (:meth:`IdentityChecker.check`) picks a liveness challenge at random (the coach screen tells the person
what to do, see ``on_challenge``) and makes up to :data:`ATTEMPTS` attempts at it: the challenge is not drawn again
per attempt, so that a print with cut-out eyes cannot wait for the blink challenge to come up. Each attempt captures
:data:`agent.camera.DEFAULT_SEQUENCE_FRAMES` frames, finds the faces and their landmarks in every frame (a full
detection on a downscaled copy, then the face tracked: :meth:`biometrics.engine.FaceEngine.track`), encodes the best
frame (more, up to :data:`ENCODE_FRAMES`, when its distance is near the threshold) for the match and hands the
sequence to the pure judge :func:`biometrics.liveness.judge`. The outcome is a :class:`CheckedFace`: a
``FaceOutcome`` (what ``agent.session`` reads) that also carries the liveness verdict, its figures, the challenge, the
time taken and the evidence photo: the JPEG (:func:`agent.photos.evidence_jpeg`, with the caption ``caption``
returns) of the frame the decision was made on, whose SHA-256 the signed records name (``photo``).

Liveness ``mode``:

- ``"enforce"``: a sequence that fails liveness fails the check (result ``"fail"``, the reason in ``liveness``);
- ``"record"``: liveness is measured and recorded, the decision rests on the face match alone (for a terminal
  whose camera is being commissioned, or a demo that shows still photos);
- ``"off"``: one frame per attempt, no liveness (the behaviour before liveness existed).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Literal

from agent.camera import (
    DEFAULT_SEQUENCE_FRAMES,
    DEFAULT_SEQUENCE_INTERVAL,
    Camera,
    CameraUnavailable,
    TimedFrame,
    capture_sequence,
)
from agent.photos import evidence_jpeg
from agent.session import FaceOutcome
from biometrics.liveness import (
    DEFAULT_POLICY,
    Challenge,
    LivenessFrame,
    LivenessPolicy,
    LivenessResult,
    judge,
    yaw_of,
)
from biometrics.templates import distance as template_distance
from firmware_protocols.messages import photo_sha256

log = logging.getLogger(__name__)


#: Sequences tried before a check fails: a real face turns and blinks, so one bad sequence must not refuse a person
#: (the demo clip's frames are 0.39–0.57 from its enrolment photo). Each attempt is a fresh capture and challenge.
ATTEMPTS = 3

#: Most frames of a sequence encoded for the match; the distance is their median. Encoding is the costly step
#: (~125 ms a face on one core here, against ~4 ms a frame for tracking + landmarks), so one frame is encoded first
#: and the others only when its distance is near the threshold (see ENCODE_MARGIN).
ENCODE_FRAMES = 3

#: A first frame's distance this close to the threshold (either side) is not decided on one frame: ENCODE_FRAMES
#: frames are encoded and their median decides. Frames of one live sequence spread by about ±0.09 around their
#: median (the shipped clip: 0.39-0.57, median 0.47), so outside this band one frame gives the same decision.
ENCODE_MARGIN = 0.05

LivenessMode = Literal["enforce", "record", "off"]


@dataclass(frozen=True, slots=True)
class CheckedFace(FaceOutcome):
    """A ``FaceOutcome`` with the evidence of the check.

    - ``liveness``: the judge's verdict and figures (None when liveness is off or no sequence was judged);
    - ``challenge``: what the person was asked to do;
    - ``frames``: frames captured; ``elapsed_ms``: the whole attempt, capture included; ``compute_ms``: face
      detection, landmarks, encoding and judging only;
    - ``jpeg``: the evidence photo (the decisive frame, downscaled and captioned), or None (camera error, or the
      photo could not be made).

    :meth:`to_body` adds ``liveness`` (integers only, as signed records need) and ``photo`` (the JPEG's SHA-256) to
    the ``result``/``distance`` body.
    """

    liveness: LivenessResult | None = None
    challenge: str | None = None
    frames: int = 0
    elapsed_ms: int | None = None
    compute_ms: int | None = None
    jpeg: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def photo_sha256(self) -> str | None:
        return None if self.jpeg is None else photo_sha256(self.jpeg)

    def to_body(self) -> dict[str, Any]:
        body = FaceOutcome.to_body(self)  # zero-argument super() does not work in a slots dataclass on 3.11
        if self.liveness is not None:
            body["liveness"] = self.liveness.to_body()
        if self.jpeg is not None:
            body["photo"] = photo_sha256(self.jpeg)
        return body


class IdentityChecker:
    def __init__(
        self,
        camera: Camera,
        engine: Any,
        threshold: float,
        attempts: int = ATTEMPTS,
        *,
        liveness: LivenessMode = "record",
        policy: LivenessPolicy = DEFAULT_POLICY,
        challenges: Sequence[Challenge | str] = (Challenge.BLINK, Challenge.HEAD_TURN),
        frames: int = DEFAULT_SEQUENCE_FRAMES,
        interval: float = DEFAULT_SEQUENCE_INTERVAL,
        rng: random.Random | None = None,
        on_challenge: Callable[[Challenge], None] | None = None,
        caption: Callable[[], Sequence[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if liveness not in ("enforce", "record", "off"):
            raise ValueError(f"liveness mode must be enforce, record or off, not {liveness!r}")
        if not challenges:
            raise ValueError("at least one liveness challenge is needed")
        self.attempts = attempts
        self.camera = camera
        self.engine = engine  # biometrics.engine.FaceEngine
        self.threshold = threshold
        self.liveness: LivenessMode = liveness
        self.policy = policy
        self.challenges = [Challenge(c) for c in challenges]
        self.frames = frames
        self.interval = interval
        self.rng = rng if rng is not None else random.SystemRandom()  # a replayer must not guess the next one
        self.on_challenge = on_challenge
        self.caption = caption  # the evidence photo's watermark (school, coach, student, time, place)
        self._clock = clock
        self._sleep = sleep
        self._camera_failing = False

    def check(self, candidates: Mapping[str, Any]) -> FaceOutcome:
        """Identify among ``candidates`` (person id → FaceTemplate; one entry for a 1:1 check): the first passing
        attempt, else the last outcome."""
        outcome: FaceOutcome = FaceOutcome("camera_error", None)
        challenge = self.rng.choice(self.challenges)
        if self.liveness != "off" and self.on_challenge is not None:
            self.on_challenge(challenge)
        for _ in range(self.attempts):
            if self.liveness == "off":
                outcome = self._check_once(candidates)
            else:
                outcome = self._check_sequence(candidates, challenge)
            if outcome.result in ("pass", "camera_error"):
                break
        return outcome

    # --- one frame, no liveness ---------------------------------------------------------------------------

    def _check_once(self, candidates: Mapping[str, Any]) -> FaceOutcome:
        try:
            frame = self.camera.capture()
        except CameraUnavailable as exc:
            self._camera_lost(exc)
            return FaceOutcome("camera_error", None)
        self._camera_failing = False
        match = self.engine.identify(frame[:, :, ::-1], candidates, self.threshold)  # BGR → RGB
        jpeg = self._photo(frame[:, :, ::-1])
        if match.faces == 0:
            return CheckedFace("no_face", None, jpeg=jpeg)
        if match.faces > 1:
            return CheckedFace("several_faces", None, jpeg=jpeg)
        if match.person_id is None:
            return CheckedFace("fail", None, match.distance, jpeg=jpeg)
        return CheckedFace("pass", match.person_id, match.distance, jpeg=jpeg)

    # --- a sequence, with liveness ----------------------------------------------------------------------------

    def _check_sequence(self, candidates: Mapping[str, Any], challenge: Challenge) -> FaceOutcome:
        started = self._clock()
        try:
            shots = capture_sequence(self.camera, self.frames, self.interval, clock=self._clock, sleep=self._sleep)
        except CameraUnavailable as exc:
            self._camera_lost(exc)
            return CheckedFace("camera_error", None, challenge=challenge.value)
        self._camera_failing = False
        t0 = time.perf_counter()
        seq = self._observe(shots)
        verdict = judge(seq, challenge, self.policy)
        person, dist, decisive = self._match(seq, candidates)
        several = sum(1 for f in seq if len(f.faces) > 1)
        single = sum(1 for f in seq if len(f.faces) == 1)
        compute_ms = round((time.perf_counter() - t0) * 1000)
        elapsed_ms = round((self._clock() - started) * 1000)
        evidence: dict[str, Any] = {
            "jpeg": self._photo((decisive or seq[len(seq) // 2]).image) if seq else None,
            "liveness": verdict,
            "challenge": challenge.value,
            "frames": len(shots),
            "elapsed_ms": elapsed_ms,
            "compute_ms": compute_ms,
        }
        log.info(
            "face check: challenge %s, liveness %s, distance %s, %d frames in %d ms (%d ms computing)",
            challenge.value, verdict.reason or "passed", None if dist is None else round(dist, 3), len(shots),
            elapsed_ms, compute_ms,
        )  # fmt: skip
        if several > self.policy.max_several_fraction * len(seq) or (several and not single):
            return CheckedFace("several_faces", None, **evidence)
        if not single:
            return CheckedFace("no_face", None, **evidence)
        if person is None:
            return CheckedFace("fail", None, dist, **evidence)
        if self.liveness == "enforce" and not verdict.passed:
            return CheckedFace("fail", person, dist, **evidence)  # the face matched, but it was not alive
        return CheckedFace("pass", person, dist, **evidence)

    def _observe(self, shots: list[TimedFrame]) -> list[LivenessFrame]:
        rgbs = [shot.frame[:, :, ::-1] for shot in shots]  # BGR → RGB
        track = getattr(self.engine, "track", None)  # FaceEngine tracks faces through a sequence (~5x cheaper)
        found = track(rgbs) if track is not None else [self.engine.sightings(rgb) for rgb in rgbs]
        return [LivenessFrame(rgb, shot.t, tuple(faces)) for rgb, shot, faces in zip(rgbs, shots, found, strict=True)]

    def _match(
        self, seq: list[LivenessFrame], candidates: Mapping[str, Any]
    ) -> tuple[str | None, float | None, LivenessFrame | None]:
        """(person, distance, decisive frame) from the frames holding exactly one face.

        The best frame (:func:`best_frames`: frontal and sharp) is encoded first; when its distance to the nearest
        candidate is within :data:`ENCODE_MARGIN` of the threshold, up to ``ENCODE_FRAMES - 1`` more frames spread
        over the sequence are encoded and the distance is the median. The candidate whose distance is smallest
        matches if under the threshold; the decisive frame is the encoded one nearest that distance (the evidence
        photo)."""
        single = [f for f in seq if len(f.faces) == 1]
        if not single:
            return None, None, None
        order = best_frames(single)
        encoded: list[tuple[LivenessFrame, Any]] = []

        def encode(frame: LivenessFrame) -> None:
            encoded.extend((frame, t) for t in self.engine.encode_at(frame.image, [frame.faces[0].box])[:1])

        encode(order[0])
        if not encoded or not candidates:
            return None, None, order[0]

        def nearest() -> tuple[str, float, Any]:
            scored = [(pid, float(median(template_distance(t, template) for _, t in encoded)), template)
                      for pid, template in candidates.items()]  # fmt: skip
            return min(scored, key=lambda x: x[1])

        best_id, best, best_template = nearest()
        if abs(best - self.threshold) < ENCODE_MARGIN and len(single) > 1:
            rest = [f for f in single if f is not order[0]]
            more = ENCODE_FRAMES - 1
            picks = rest if len(rest) <= more else [rest[round(k * (len(rest) - 1) / (more - 1))] for k in range(more)]
            for frame in picks:
                encode(frame)
            best_id, best, best_template = nearest()
        decisive = min(encoded, key=lambda ft: abs(template_distance(ft[1], best_template) - best))[0]
        if best < self.threshold:
            return best_id, best, decisive
        return None, best, decisive

    def _photo(self, rgb: Any) -> bytes | None:
        """The evidence JPEG of a frame; None (logged) if it cannot be made: the check itself stands."""
        try:
            caption = list(self.caption()) if self.caption is not None else []
            return evidence_jpeg(rgb, caption)
        except Exception:  # noqa: BLE001 - a photo that cannot be made must not fail the face check
            log.exception("evidence photo not made")
            return None

    def _camera_lost(self, exc: CameraUnavailable) -> None:
        if not self._camera_failing:
            log.error("camera unavailable: %s", exc)
        self._camera_failing = True


def best_frames(frames: Sequence[LivenessFrame]) -> list[LivenessFrame]:
    """Frames with one face, best first for encoding: the most frontal third (nose offset along the eye line, see
    :func:`biometrics.liveness.yaw_of`), sharpest first (variance of the grey Laplacian inside the face box), then
    the others, most frontal first. A frame whose landmarks cannot be read comes last."""

    def yaw(frame: LivenessFrame) -> float:
        try:
            return abs(yaw_of(frame.faces[0].landmarks))
        except (ValueError, KeyError):
            return float("inf")

    by_yaw = sorted(frames, key=yaw)
    head = max(1, len(by_yaw) // 3)
    return sorted(by_yaw[:head], key=sharpness, reverse=True) + by_yaw[head:]


def sharpness(frame: LivenessFrame) -> float:
    """Variance of the 4-neighbour Laplacian of the grey face box: low on a blurred (moving) frame."""
    import numpy as np

    top, right, bottom, left = frame.faces[0].box
    crop = np.asarray(frame.image[top:bottom, left:right], dtype=np.float32)
    if crop.ndim == 3:
        crop = crop.mean(axis=2)
    if crop.shape[0] < 3 or crop.shape[1] < 3:
        return 0.0
    lap = crop[1:-1, :-2] + crop[1:-1, 2:] + crop[:-2, 1:-1] + crop[2:, 1:-1] - 4 * crop[1:-1, 1:-1]
    return float(lap.var())
