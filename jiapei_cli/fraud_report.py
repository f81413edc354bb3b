"""`jiapei sim fraud [--only NAME…] [--no-faces] [--keep DIR] [--json]`: every fraud scenario through the real server,
and what it caught.

Each scenario (``simulators.fraud``, ``simulators.fraud_faces``, ``simulators.fraud_car``) gets a fresh SQLite server
database: its school, people and terminals are enrolled as the office does (the car scenarios' terminals with the VIN
named at enrolment, the face scenarios' people with templates made by the face engine from their enrolment photos),
then its uploads are fed in arrival order through ``server.ingest.Ingestor`` with the ``server.ledger.Ledger`` as the
after-commit hook (and its evidence photos through ``server.photos.PhotoIngest``), on a clock set to each arrival.
The minute verdicts and the review queue are read back:

    | scenario | suspects | caught | reason code | other codes seen on the suspects | in review queue |

``caught`` counts the suspect minutes invalid with the scenario's reason code, ``in review queue`` the suspect minutes
named by an open review item. A control (the clean fleet, or a scenario without a reason code picked with
``--only``) gets a line of its own: its minutes, the false alarms (minutes invalid for any reason) and review items.

By default: every scenario that has a reason code, and the clean fleet. The face scenarios need the face engine
(dlib), OpenCV and the shipped demo faces; ``--no-faces`` skips them. Exit status: 0 when every scenario is caught in
full and no control raises a false alarm, 1 otherwise (a scenario that could not run counts as not caught), 2 on
bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware_protocols import envelope, topics
from firmware_protocols.messages import PhotoStatus, RecordBatch
from server.policy import Policy, TeachingArea, load_builtin_policy
from simulators.fraud import SCENARIOS, SCHOOL, TEACHING_AREA, Scenario, clean_fleet
from simulators.fraud_car import CAR_SCENARIOS
from simulators.fraud_faces import FACE_SCENARIOS

#: national-2016 with the scenario school's teaching area (as the fraud tests judge).
POLICY = replace(
    load_builtin_policy("national-2016"),
    teaching_areas=(TeachingArea(SCHOOL, frozenset({2, 3}), "training ground", TEACHING_AREA),),
)
#: Enrolment time of every school, person and terminal (before any scenario's first record).
ENROLLED_AT = datetime(2026, 1, 1, tzinfo=UTC)
CLEAN_FLEET = "clean_fleet"

#: Every scenario by name: whether it needs the face engine, and how to build it.
CATALOGUE: dict[str, tuple[bool, Callable[[], Scenario]]] = {
    **{name: (False, make) for name, make in SCENARIOS.items()},
    **{name: (True, make) for name, make in FACE_SCENARIOS.items()},
    **{name: (False, make) for name, make in CAR_SCENARIOS.items()},
    CLEAN_FLEET: (False, clean_fleet),
}


@dataclass
class Caught:
    """What the server made of one fraud scenario."""

    scenario: str
    expected: str
    suspects: int
    caught: int = 0
    other_codes: list[str] = field(default_factory=list)
    in_review: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.suspects > 0 and self.caught == self.suspects


@dataclass
class Control:
    """What the server made of a scenario where nothing may be caught."""

    scenario: str
    minutes: int = 0
    false_alarms: int = 0
    review_items: int = 0
    codes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.minutes > 0 and self.false_alarms == 0


class SettableClock:
    """The ingestor's and ledger's "now": set to each upload's arrival."""

    def __init__(self) -> None:
        self.t = ENROLLED_AT

    def __call__(self) -> datetime:
        return self.t


class FeedRefused(RuntimeError):
    """The server refused an upload of a scenario (the scenario, not a verdict, is broken)."""


# ---------------------------------------------------------------------------------------------- the server side


def fresh_server_db(path: Path) -> tuple[Any, Any]:
    """A migrated SQLite database at ``path``: (engine, session factory)."""
    from server import db

    url = f"sqlite:///{path}"
    db.upgrade(url)
    engine = db.make_engine(url)
    return engine, db.make_session_factory(engine)


def face_templates(scenario: Scenario, face_engine: Any) -> dict[str, str]:
    """Each enrolled person's template, made from their enrolment photo (face scenarios only)."""
    out = {}
    for pid, photo in getattr(scenario, "faces", {}).items():
        found = face_engine.encode(face_engine.load_image(photo))
        if len(found) != 1:
            raise FeedRefused(f"enrolment photo {photo} shows {len(found)} faces")
        out[pid] = str(found[0].encode())
    return out


def enrol(sf: Any, scenario: Scenario, templates: dict[str, str]) -> None:
    """The school, coaches, students and terminals (with the VIN named at enrolment, when the scenario names one)."""
    from server.models import Coach, School, Student, Terminal, TerminalKey

    vins: dict[str, str] = getattr(scenario, "vins", {})
    now = ENROLLED_AT
    with sf() as s, s.begin():
        s.add(School(id=SCHOOL, name="Fraud scenario school", created_at=now))
        s.flush()
        for c in scenario.coaches:
            s.add(Coach(id=c, name=c, school_id=SCHOOL, classes=["C1"], face_template=templates.get(c, "fr1:x"),
                        created_at=now))  # fmt: skip
        for p in scenario.students:
            s.add(Student(id=p, name=p, school_id=SCHOOL, licence_class="C1", face_template=templates.get(p, "fr1:y"),
                          created_at=now))  # fmt: skip
        for t, pem in scenario.terminals.items():
            kid = envelope.key_id(envelope.public_key_from_pem(pem))
            s.add(Terminal(id=t, car_plate="鲁L0000学", school_id=SCHOOL, public_key=pem, key_id=kid, status="active",
                           registered_at=now, vin=vins.get(t)))  # fmt: skip
            s.flush()
            s.add(TerminalKey(terminal_id=t, key_id=kid, public_key=pem, from_chain=1, added_at=now))


#: One arrival: (moment, 0 for a batch of records / 1 for a photo, terminal, records or photo message).
Arrival = tuple[datetime, int, str, Any]


def in_arrival_order(scenario: Scenario) -> list[Arrival]:
    """As terminals upload live: one batch per terminal and arrival moment, each photo after the records it follows."""
    groups: dict[tuple[datetime, str], list[bytes]] = defaultdict(list)
    for u in scenario.uploads:
        groups[(u.arrive_at, u.terminal)].append(u.raw)
    arrivals: list[Arrival] = [(at, 0, t, raws) for (at, t), raws in groups.items()]
    arrivals += [(p.arrive_at, 1, p.terminal, p.payload) for p in getattr(scenario, "photos", [])]
    return sorted(arrivals, key=lambda a: (a[0], a[1]))


def feed(sf: Any, arrivals: list[Arrival], policy: Policy = POLICY, face_engine: Any = None) -> None:
    """Every arrival through the real ingestor (the ledger judging after each commit); photos through PhotoIngest."""
    from server.ingest import Ingestor
    from server.ledger import Ledger
    from server.photos import PhotoIngest, use_photo_ingest

    clock = SettableClock()
    ledger = Ledger(sf, policy, clock)
    ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
    photos = None
    if face_engine is not None:
        photos = PhotoIngest(sf, clock, engine=face_engine, after_verdict=ledger.after_ingest)
        use_photo_ingest(ingestor, photos)
    held: list[tuple[str, bytes]] = []
    for n, (at, _kind, terminal, what) in enumerate(arrivals):
        clock.t = max(clock.t, at)
        if isinstance(what, list):
            ack, _ = ingestor.handle_batch(topics.up_records(terminal),
                                           RecordBatch(terminal, f"b{n}", tuple(what)).encode())  # fmt: skip
            stored = ack is not None and ack.error is None and all(r.status in ("stored", "duplicate")
                                                                   for r in ack.results)  # fmt: skip
            if not stored:
                raise FeedRefused(f"batch b{n} of {terminal} at {at:%Y-%m-%d %H:%M:%S}: {ack}")
            continue
        photo_ack = ingestor.handle_message(topics.up_photos(terminal), what)
        status = getattr(photo_ack, "status", None)
        if status is PhotoStatus.PENDING:  # came before its record: the terminal sends it again later
            held.append((terminal, what))
        elif status not in (PhotoStatus.STORED, PhotoStatus.DUPLICATE):
            raise FeedRefused(f"photo of {terminal} at {at:%Y-%m-%d %H:%M:%S}: {photo_ack}")
    if photos is not None:
        photos.resolve_pending()  # the consumer's ticker
        for terminal, what in held:
            photo_ack = ingestor.handle_message(topics.up_photos(terminal), what)
            if getattr(photo_ack, "status", None) not in (PhotoStatus.STORED, PhotoStatus.DUPLICATE):
                raise FeedRefused(f"photo of {terminal} sent again: {photo_ack}")


def judge(sf: Any, scenario: Scenario) -> Caught | Control:
    """Read back the minute verdicts and the review queue."""
    from sqlalchemy import select

    from server.models import ITEM_OPEN, Minute, ReviewItem

    with sf() as s:
        minutes = {m.record_no: (m.valid, list(m.reasons)) for m in s.scalars(select(Minute))}
        items = list(s.scalars(select(ReviewItem)))
    if scenario.expected is None:
        flagged = [reasons for valid, reasons in minutes.values() if not valid]
        return Control(scenario.name, len(minutes), len(flagged), len(items),
                       sorted({code for reasons in flagged for code in reasons}))  # fmt: skip
    suspects = [minutes.get(no, (None, [])) for no in scenario.suspects]
    queued = {no for i in items if i.status == ITEM_OPEN for no in i.records}
    return Caught(
        scenario.name,
        scenario.expected,
        len(scenario.suspects),
        caught=sum(1 for valid, reasons in suspects if valid is False and scenario.expected in reasons),
        other_codes=sorted({code for _v, reasons in suspects for code in reasons} - {scenario.expected}),
        in_review=len(scenario.suspects & queued),
    )


# ---------------------------------------------------------------------------------------------- running


class FaceEngineHolder:
    """The face engine, loaded once on first need; the reason when it cannot be."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.unavailable: str | None = None

    def get(self) -> Any:
        if self.engine is None and self.unavailable is None:
            from biometrics.errors import EngineUnavailable
            from simulators.fraud_faces import STUDENT_CLIP, face_file

            if not face_file(STUDENT_CLIP).exists():
                self.unavailable = f"the shipped demo faces are missing ({face_file(STUDENT_CLIP)})"
                return None
            try:
                from biometrics.engine import FaceEngine

                self.engine = FaceEngine()
            except (EngineUnavailable, ImportError) as exc:
                self.unavailable = f"face engine not usable: {exc}"
        return self.engine


def run_one(name: str, workdir: Path, faces: FaceEngineHolder) -> Caught | Control:
    needs_faces, make = CATALOGUE[name]
    started = time.monotonic()
    face_engine = faces.get() if needs_faces else None
    if needs_faces and face_engine is None:
        return Caught(name, "?", 0, error=f"skipped: {faces.unavailable}")
    try:
        scenario = make()
    except (ImportError, OSError) as exc:  # the face scenarios read the demo faces with OpenCV and Pillow
        return Caught(name, "?", 0, error=f"skipped: cannot build the scenario: {exc}")
    workdir.mkdir(parents=True, exist_ok=True)
    engine, sf = fresh_server_db(workdir / "server.db")
    try:
        enrol(sf, scenario, face_templates(scenario, face_engine) if needs_faces else {})
        feed(sf, in_arrival_order(scenario), face_engine=face_engine)
        outcome = judge(sf, scenario)
    except FeedRefused as exc:
        outcome = (Control(name) if scenario.expected is None else Caught(name, scenario.expected,
                                                                          len(scenario.suspects)))  # fmt: skip
        outcome.error = str(exc)
    finally:
        engine.dispose()
    outcome.seconds = round(time.monotonic() - started, 2)
    return outcome


def default_names(no_faces: bool) -> list[str]:
    """Every scenario with a reason code (the car controls have none), then the clean fleet."""
    names = [*SCENARIOS, *([] if no_faces else FACE_SCENARIOS)]
    names += [name for name, make in CAR_SCENARIOS.items() if make().expected is not None]
    return [*names, CLEAN_FLEET]


def run_all(names: list[str], keep: Path | None) -> list[Caught | Control]:
    faces = FaceEngineHolder()
    if keep is not None:
        return [run_one(name, keep / name, faces) for name in names]
    with tempfile.TemporaryDirectory(prefix="jiapei-fraud-") as tmp:
        return [run_one(name, Path(tmp) / name, faces) for name in names]


# ---------------------------------------------------------------------------------------------- output


def markdown(outcomes: list[Caught | Control]) -> str:
    lines = ["| scenario | suspects | caught | reason code | other codes seen on the suspects | in review queue |",
             "|---|---:|---:|---|---|---:|"]  # fmt: skip
    notes = []
    for o in outcomes:
        if isinstance(o, Caught):
            others = ", ".join(o.other_codes) or "—"
            lines.append(f"| {o.scenario} | {o.suspects} | {o.caught} | {o.expected} | {others} | {o.in_review} |")
            if o.error:
                notes.append(f"{o.scenario}: {o.error}")
    lines.append("")
    for o in outcomes:
        if isinstance(o, Control):
            codes = f" ({', '.join(o.codes)})" if o.codes else ""
            lines.append(f"{o.scenario}: {o.minutes} minutes, {o.false_alarms} false alarms{codes}, "
                         f"{o.review_items} review items")  # fmt: skip
            if o.error:
                notes.append(f"{o.scenario}: {o.error}")
    lines += ["", *notes] if notes else []
    ok = all(o.ok for o in outcomes)
    seconds = sum(o.seconds for o in outcomes)
    verdict = "every scenario caught in full, no false alarm" if ok else "not every scenario caught, or a false alarm"
    lines += ["", f"{'OK' if ok else 'FAILED'}: {verdict} ({seconds:.1f} s)"]
    return "\n".join(lines)


def as_json(outcomes: list[Caught | Control]) -> str:
    return json.dumps({
        "ok": all(o.ok for o in outcomes),
        "scenarios": [asdict(o) | {"ok": o.ok} for o in outcomes if isinstance(o, Caught)],
        "controls": [asdict(o) | {"ok": o.ok} for o in outcomes if isinstance(o, Control)],
    }, ensure_ascii=False, indent=2)  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jiapei sim fraud", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"scenarios to run: {', '.join(CATALOGUE)}")
    parser.add_argument("--no-faces", action="store_true", help="skip the face scenarios (they need dlib)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep each scenario's database in DIR/NAME/server.db")
    parser.add_argument("--json", action="store_true", help="machine output")
    args = parser.parse_args(argv)
    if args.only:
        unknown = [n for n in args.only if n not in CATALOGUE]
        if unknown:
            parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(CATALOGUE)}")
        names = [n for n in dict.fromkeys(args.only) if not (args.no_faces and CATALOGUE[n][0])]
    else:
        names = default_names(args.no_faces)
    if args.keep is not None:
        taken = [n for n in names if (args.keep / n / "server.db").exists()]
        if taken:
            parser.error(f"--keep {args.keep}: a database is already there for {', '.join(taken)}")
    outcomes = run_all(names, args.keep)
    print(as_json(outcomes) if args.json else markdown(outcomes))
    sys.stdout.flush()
    return 0 if all(o.ok for o in outcomes) else 1
