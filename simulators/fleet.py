"""``jiapei sim fleet``: whole training cars without hardware, for the demo and end-to-end tests.

Each car gets a GNSS receiver on a pseudo-terminal (NMEA from a driver on a route near Rizhao), an ELM327 OBD-II
adapter on another pseudo-terminal (rpm and speed from the same driver, and the car's own VIN: ``fleet_vin(n)`` for
car ``n``, distinct and well-formed) and a camera on the shared camera
simulator (an HTTP snapshot URL whose scene the scenario sets). All follow one simulated clock. The process writes
what it serves to ``--out`` (JSON) and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware_protocols.identifiers import BEIJING
from simulators.camera import CameraSimulator
from simulators.clock import SimClock
from simulators.gps import ROAD_LOOP, ROAD_SPEEDS, TRAINING_GROUND, TRAINING_SPEEDS, GpsPty, RouteDriver
from simulators.vehicle import Elm327Emulator, driver_signals, fleet_vin

log = logging.getLogger(__name__)


@dataclass
class SimCar:
    name: str
    gps: GpsPty
    elm: Elm327Emulator
    route: str


def default_start() -> datetime:
    """Today 08:00 Beijing time: inside the practical training window."""
    today = datetime.now(BEIJING).date()
    return datetime(today.year, today.month, today.day, 8, 0, tzinfo=BEIJING).astimezone(UTC)


def car_seed(index: int, clock: SimClock) -> int:
    """The seed of car ``index``'s receiver noise: its own per car, the same for the same simulated start (a run is
    reproducible), another on another day (runs of two days never repeat each other's positions)."""
    return int(clock.start.timestamp()) * 100 + index


def start_fleet(cars: int, clock: SimClock, camera_port: int = 0) -> tuple[CameraSimulator, list[SimCar]]:
    names = [f"car{i + 1}" for i in range(cars)]
    cameras = CameraSimulator(names, port=camera_port).start()
    fleet = []
    for i, name in enumerate(names):
        # Cars drive the training ground except every third, which drives the road loop; each starts at another
        # point of its loop so the fleet is spread out.
        route, profile = (ROAD_LOOP, ROAD_SPEEDS) if i % 3 == 2 else (TRAINING_GROUND, TRAINING_SPEEDS)
        driver = RouteDriver(route, profile)
        gps = GpsPty(driver, clock, seed=car_seed(i, clock)).start()
        elm = Elm327Emulator(driver_signals(driver, clock), vin=fleet_vin(i + 1)).start()
        fleet.append(SimCar(name, gps, elm, route.name))
    return cameras, fleet


def describe(cameras: CameraSimulator, fleet: list[SimCar], clock: SimClock) -> dict[str, Any]:
    return {
        "sim_start": clock.start.isoformat(),
        "factor": clock.factor,
        "camera_url": cameras.url,
        "cars": [{"name": c.name, "gps": c.gps.path, "vehicle": c.elm.path, "vin": c.elm.vin, "route": c.route,
                  "camera": cameras.snapshot_url(c.name)} for c in fleet],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jiapei sim fleet", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cars", type=int, default=3)
    p.add_argument("--factor", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--start", default=None, help="simulated start, ISO 8601 (default today 08:00 Beijing)")
    p.add_argument("--camera-port", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="where to write the fleet description (JSON)")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s sim-fleet %(levelname)s %(name)s: %(message)s")
    start = datetime.fromisoformat(args.start) if args.start else default_start()
    if start.tzinfo is None:
        p.error("--start needs a time zone, e.g. 2026-11-27T08:00:00+08:00")
    clock = SimClock(start=start.astimezone(UTC), factor=args.factor)
    cameras, fleet = start_fleet(args.cars, clock, args.camera_port)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(describe(cameras, fleet, clock), indent=2))
    tmp.replace(args.out)
    log.info("fleet of %d cars running; simulated time %s at %gx", len(fleet), start.isoformat(), args.factor)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(timedelta(seconds=30).total_seconds()):
        for c in fleet:
            log.debug("%s: %s", c.name, c.gps.stats)
    for c in fleet:
        c.gps.stop()
        c.elm.stop()
    cameras.stop()
    return 0
