"""The terminal: memory with the face models loaded, ms per face check at 640×480, p99 of a minute-record commit.

    taskset -c 0 .venv/bin/python bench/bench_agent.py [--checks 10] [--commits 2000] [--no-liveness] [--faces-only]

- RSS: this process after importing the agent's modules, then after :class:`biometrics.engine.FaceEngine` has loaded
  dlib's detector, landmark and ResNet models and done a first check (``VmRSS`` and peak ``VmHWM`` from /proc).
- Face check: :class:`agent.identity.IdentityChecker` with an in-memory :class:`agent.camera.FakeCamera`, 1:1
  against the enrolment template: one frame with liveness off (a real photo of ``simulators/data/faces`` letterboxed
  to 640×480); the full liveness sequence (12 frames: detection then tracking, 68 landmarks, encoding, the judge) on
  that photo re-served, and in enforce mode on the shipped demo clip (a moving face, head-turn challenge) scaled to
  640 px and letterboxed. Capture pacing is excluded (sleep injected as a no-op): compute only; run it under
  ``taskset -c 0`` for one core. The JPEG decoding a snapshot camera adds is printed beside it.
- RSS is read after the one-frame checks (no 68-point landmark model: it loads with the first liveness check) and
  again after the liveness checks.
- Commit: :meth:`agent.store.RecordStore.append` of a minute record (Ed25519 sign + SQLite WAL ``synchronous=FULL``,
  one transaction each) in a temp dir; beside it, the limit of the same disk: p99 of a bare SQLite commit of one
  small row with the same settings (fsync latency), and an Ed25519 signature.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import T0, conftest, machine  # noqa: E402

FACES = Path(__file__).resolve().parents[1] / "simulators" / "data" / "faces"
TARGET_FACE_MS = 250
TARGET_RSS_MB = 200


def rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def p(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1] if len(values) > 1 else values[0]
    )


def frame_640x480(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as opened:
        im = opened.convert("RGB")
    im.thumbnail((640, 480))
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(im, ((640 - im.width) // 2, (480 - im.height) // 2))
    return np.ascontiguousarray(np.asarray(canvas, dtype=np.uint8)[:, :, ::-1])  # BGR, as cameras give


def clip_640x480(path: Path, frames: int, stride: int) -> list[Any]:
    """``frames`` frames of a clip, every ``stride``-th, scaled to 640 px wide and letterboxed to 640×480 (BGR)."""
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(str(path))
    out: list[Any] = []
    try:
        k = 0
        while len(out) < frames:
            ok, frame = cap.read()
            if not ok:
                break
            if k % stride == 0:
                h, w = frame.shape[:2]
                scaled = cv2.resize(frame, (640, round(h * 640 / w)), interpolation=cv2.INTER_LINEAR)
                canvas = np.full((480, 640, 3), 90, np.uint8)
                y = (480 - scaled.shape[0]) // 2
                canvas[y : y + scaled.shape[0]] = scaled
                out.append(canvas)
            k += 1
    finally:
        cap.release()
    return out


def timed_checks(checker: Any, candidates: Any, checks: int) -> tuple[float, float, float, Any]:
    """(median ms of the whole check, max ms, median compute_ms the checker reports, last outcome) after a warm-up."""
    checker.check(candidates)
    times, computes, outcome = [], [], None
    for _ in range(checks):
        t = time.perf_counter()
        outcome = checker.check(candidates)
        times.append((time.perf_counter() - t) * 1000)
        computes.append(getattr(outcome, "compute_ms", None) or 0)
    return statistics.median(times), max(times), statistics.median(computes), outcome


def bench_faces(checks: int, liveness: bool = True) -> None:
    import agent.main  # noqa: F401 - the agent program's modules, as the terminal runs them
    import agent.runtime  # noqa: F401

    rss0, _ = rss_mb()
    from agent.camera import FakeCamera
    from agent.identity import IdentityChecker
    from biometrics.engine import FaceEngine

    engine = FaceEngine()
    enrol = engine.encode(engine.load_image(FACES / "biden_enrol.jpg"))[0]
    frame = frame_640x480(FACES / "biden_live.jpg")
    candidates = {"P1": enrol}
    quiet = {"attempts": 1, "interval": 0.0, "sleep": lambda _s: None}
    rows = []
    off = IdentityChecker(FakeCamera([frame]), engine, 0.5, liveness="off", **quiet)  # type: ignore[arg-type]
    rows.append(("one frame, liveness off", *timed_checks(off, candidates, checks)))
    rss_off, _ = rss_mb()
    if liveness:
        still = IdentityChecker(FakeCamera([frame]), engine, 0.5, liveness="record", **quiet)  # type: ignore[arg-type]
        rows.append(("liveness sequence, 12 frames of a still photo", *timed_checks(still, candidates, checks)))
    rss1, hwm = rss_mb()  # before the clip's frames are loaded: the agent's own memory
    if liveness:
        lin = engine.encode(engine.load_image(FACES / "lin_manuel_miranda_enrol.jpg"))[0]
        clip = clip_640x480(FACES / "lin_manuel_miranda_live.mp4", 24, 2)
        moving = IdentityChecker(FakeCamera(clip), engine, 0.5, liveness="enforce", challenges=["head_turn"],
                                 frames=12, **quiet)  # type: ignore[arg-type]  # fmt: skip
        label = "liveness sequence, 12 frames of the demo clip, enforce"
        rows.append((label, *timed_checks(moving, {"L": lin}, checks)))
        decode = jpeg_decode_ms(clip[:12])
    verdict = "met" if hwm <= TARGET_RSS_MB else "MISSED"
    print(f"agent RSS: {rss0:.0f} MB with the agent's modules imported; {rss_off:.0f} MB with the face models for a "
          f"one-frame check (no 68-point model); {rss1:.0f} MB (peak {hwm:.0f} MB) after liveness checks "
          f"(68-point model loaded); target ≤ {TARGET_RSS_MB} MB ({verdict})")  # fmt: skip
    for label, med, worst, compute, outcome in rows:
        print(f"face check 640×480 ({label}): median {med:.0f} ms (compute_ms {compute:.0f}), max {worst:.0f} ms over "
              f"{checks}; target ≤ {TARGET_FACE_MS} ms ({'met' if med <= TARGET_FACE_MS else 'MISSED'}); "
              f"result {getattr(outcome, 'result', None)}, distance {getattr(outcome, 'distance', None)}, "
              f"liveness {getattr(getattr(outcome, 'liveness', None), 'reason', None) or 'passed'}")  # fmt: skip
    if liveness:
        print(f"  + decoding 12 snapshot JPEGs of 640×480 (SnapshotCamera): {decode:.0f} ms")


def jpeg_decode_ms(frames: list[Any]) -> float:
    """What a snapshot camera adds: decoding the sequence's JPEGs (quality 90), ms for all of them."""
    import cv2
    import numpy as np

    blobs = [bytes(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]) for f in frames]
    t = time.perf_counter()
    for b in blobs:
        cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
    return (time.perf_counter() - t) * 1000


def bench_commits(n: int) -> None:
    from agent.keys import load_or_create_key
    from agent.session import EmitRecord
    from agent.store import RecordStore
    from firmware_protocols.records import RecordKind

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        key = load_or_create_key(tmp / "agent")
        store = RecordStore(tmp / "agent" / "records.sqlite", "T000000000000001", key, tmp / "agent" / "chain")
        store.ensure_genesis(T0)
        body = {"student": conftest.STUDENT, "coach": conftest.COACH, "course": conftest.COURSE_C1_PART2,
                "session": "S1", "max_speed": 250, "distance_m": 300, "fix_count": 60,
                "fix30": {"lat": 35_416_000, "lon": 119_527_000, "mode": 3, "sats": 9, "hdop": 9, "speed": 250},
                "vehicle": {"rpm": 1800, "speed": 250, "ignition": True},
                "face": {"result": "pass", "seq": 1}}  # fmt: skip
        times = []
        for i in range(n):
            t = time.perf_counter()
            store.append(EmitRecord(RecordKind.MINUTE, T0 + timedelta(minutes=i), body, needs_record_no=True))
            times.append((time.perf_counter() - t) * 1000)
        store.close()

        conn = sqlite3.connect(str(tmp / "bare.sqlite"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v BLOB)")
        bare = []
        for i in range(n):
            t = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, b"x" * 900))
            conn.execute("COMMIT")
            bare.append((time.perf_counter() - t) * 1000)
        conn.close()
        sign = []
        for _ in range(500):
            t = time.perf_counter()
            key.sign(b"x" * 900)
            sign.append((time.perf_counter() - t) * 1000)
    print(
        f"minute commit (sign + WAL synchronous=FULL): p50 {p(times, 0.5):.2f} ms, p99 {p(times, 0.99):.2f} ms, "
        f"max {max(times):.2f} ms over {n:,}"
    )
    print(
        f"  limit of this disk: bare SQLite commit p50 {p(bare, 0.5):.2f} ms, p99 {p(bare, 0.99):.2f} ms; "
        f"Ed25519 sign p50 {p(sign, 0.5):.3f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--checks", type=int, default=10)
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--no-liveness", dest="liveness", action="store_false",
                    help="only the one-frame check (and the RSS without the 68-point model)")
    ap.add_argument("--faces-only", action="store_true", help="skip the minute-commit figures")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    bench_faces(args.checks, args.liveness)
    if not args.faces_only:
        bench_commits(args.commits)


if __name__ == "__main__":
    main()
