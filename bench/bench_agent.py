"""The terminal: memory with the face models loaded, ms per face check at 640×480, p99 of a minute-record commit.

    .venv/bin/python bench/bench_agent.py [--checks 10] [--commits 2000]

- RSS: this process after importing the agent's modules, then after :class:`biometrics.engine.FaceEngine` has loaded
  dlib's detector, landmark and ResNet models and done a first check (``VmRSS`` and peak ``VmHWM`` from /proc).
- Face check: :class:`agent.identity.IdentityChecker` with an in-memory :class:`agent.camera.FakeCamera` serving a
  real photo (``simulators/data/faces``) letterboxed to 640×480, 1:1 against its enrolment template: the full
  liveness sequence (12 frames: detection on a 320 px copy, 68 landmarks, 3 encodings, the judge) and one frame with
  liveness off. Capture pacing is excluded (sleep injected as a no-op): compute only, on one core.
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


def bench_faces(checks: int) -> None:
    import agent.main  # noqa: F401 - the agent program's modules, as the terminal runs them
    import agent.runtime  # noqa: F401

    rss0, _ = rss_mb()
    from agent.camera import FakeCamera
    from agent.identity import IdentityChecker
    from biometrics.engine import FaceEngine

    engine = FaceEngine()
    enrol = engine.encode(engine.load_image(FACES / "biden_enrol.jpg"))[0]
    frame = frame_640x480(FACES / "biden_live.jpg")
    camera = FakeCamera([frame])
    candidates = {"P1": enrol}
    results = {}
    for mode in ("record", "off"):
        checker = IdentityChecker(camera, engine, 0.5, liveness=mode, attempts=1, interval=0.0, sleep=lambda _s: None)
        checker.check(candidates)  # warm
        times, outcome = [], None
        for _ in range(checks):
            t = time.perf_counter()
            outcome = checker.check(candidates)
            times.append((time.perf_counter() - t) * 1000)
        results[mode] = (statistics.median(times), max(times), outcome)
    rss1, hwm = rss_mb()
    verdict = "met" if hwm <= TARGET_RSS_MB else "MISSED"
    print(f"agent RSS: {rss0:.0f} MB with the agent's modules imported; {rss1:.0f} MB (peak {hwm:.0f} MB) with the face"
          f" models loaded and checks done; target ≤ {TARGET_RSS_MB} MB ({verdict})")  # fmt: skip
    for mode, label in (("record", "liveness sequence, 12 frames"), ("off", "one frame, liveness off")):
        med, worst, outcome = results[mode]
        print(f"face check 640×480 ({label}): median {med:.0f} ms, max {worst:.0f} ms over {checks}; "
              f"target ≤ {TARGET_FACE_MS} ms ({'met' if med <= TARGET_FACE_MS else 'MISSED'}); "
              f"result {getattr(outcome, 'result', None)}")  # fmt: skip


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
    args = ap.parse_args()
    print(f"machine: {machine()}")
    bench_faces(args.checks)
    bench_commits(args.commits)


if __name__ == "__main__":
    main()
