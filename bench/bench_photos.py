"""Evidence photos: what the terminal pays to make one, what the server pays to re-check one.

Prints one JSON object a line: the terminal's ``evidence_jpeg`` (640 px, caption, quality 80) per frame and its
size; the server's re-check (:meth:`server.photos.PhotoIngest.recheck`: JPEG decode, HOG detection, 128-d encoding,
distance to the named person's template and to every other enrolled person of the school, near-duplicate scan,
verdict row) per photo, as a median and p95 over the shared test faces scaled to a 640x480 cabin frame.

    .venv/bin/python bench/bench_photos.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from harness import TestTerminal, enrol, machine, migrated

FACES = Path(__file__).resolve().parents[1] / "simulators" / "data" / "faces"
PEOPLE = ["obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire"]


def cabin_frame(rgb: np.ndarray) -> np.ndarray:
    """The photo centred on a grey 640x480 frame (a face of 150-320 px, as a cabin camera sees a driver)."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    h, w = min(rgb.shape[0], 480), min(rgb.shape[1], 640)
    top, left = (480 - h) // 2, (640 - w) // 2
    frame[top : top + h, left : left + w] = rgb[:h, :w]
    return frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # rounds 2+ re-check the same frames: near-duplicate alarms, as they should
    from agent.photos import evidence_jpeg
    from biometrics.engine import FaceEngine
    from firmware_protocols.messages import photo_sha256
    from firmware_protocols.records import RecordKind
    from server.models import RawRecord, Student
    from server.photos import PhotoIngest, _Named

    engine = FaceEngine()
    frames = {p: cabin_frame(engine.load_image(FACES / f"{p}_live.jpg")) for p in PEOPLE}
    caption = ["school S000000000000001  terminal T000000000000001", "coach C000000000000001  student P0000000000001",
               "2026-11-27T02:00:00Z  35.416000,119.527000"]  # fmt: skip
    make_ms, sizes, jpegs = [], [], {}
    for _ in range(args.rounds):
        for p, frame in frames.items():
            t0 = time.perf_counter()
            jpegs[p] = evidence_jpeg(frame, caption)
            make_ms.append((time.perf_counter() - t0) * 1000)
            sizes.append(len(jpegs[p]))
    print(json.dumps({"bench": "terminal_evidence_jpeg", "frame": "640x480", "ms_median": round(statistics.median(
        make_ms), 1), "bytes_median": int(statistics.median(sizes)), "bytes_max": max(sizes)}))  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        sf = migrated(f"sqlite:///{tmp}/server.db")
        terminal = TestTerminal()
        enrol(sf, terminal)
        now = datetime.now(UTC)
        with sf() as s, s.begin():  # one enrolled student per face, with a real template
            for i, p in enumerate(PEOPLE):
                t = engine.encode(engine.load_image(FACES / f"{p}_enrol.jpg"))[0].encode()
                s.add(Student(id=f"P{i + 10:015d}", name=p, school_id="S000000000000001", licence_class="C1",
                              face_template=t, photo_sha256=None, created_at=now))  # fmt: skip
        photos = PhotoIngest(sf, lambda: datetime.now(UTC), engine=engine)
        ms: list[float] = []
        seq = 0
        for _ in range(args.rounds):
            for i, p in enumerate(PEOPLE):
                seq += 1
                jpeg = evidence_jpeg(frames[p], [*caption, f"check {seq}"])
                body = {"person": f"P{i + 10:015d}", "role": "student", "result": "pass", "session": f"S{seq}",
                        "trigger": "random", "distance": 400, "photo": photo_sha256(jpeg)}  # fmt: skip
                row = RawRecord(terminal_id=terminal.id, chain=1, seq=seq, hash=f"{seq:064x}", prev="0" * 64,
                                kind=str(RecordKind.FACE_CHECK), at=now, body=body, raw=b"x",
                                received_at=now)  # fmt: skip
                with sf() as s, s.begin():
                    s.add(row)
                t0 = time.perf_counter()
                photos.recheck(_Named(terminal.id, 1, seq, now, body), photo_sha256(jpeg), jpeg)
                ms.append((time.perf_counter() - t0) * 1000)
        ms.sort()
        print(json.dumps({"bench": "server_face_recheck", "photos": len(ms), "enrolled": len(PEOPLE) + 2,
                          "ms_median": round(statistics.median(ms), 1), "ms_p95": round(ms[int(0.95 * (len(ms) - 1))],
                          1), "ms_max": round(ms[-1], 1), "machine": machine()}))  # fmt: skip


if __name__ == "__main__":
    main()
