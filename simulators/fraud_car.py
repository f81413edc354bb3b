"""Fraud scenarios of the car: a terminal used outside the car it is bound to (``domain.md``: "terminal swapped or
cloned"), built with the builders of :mod:`simulators.fraud` (same school, teaching area, signing and uploads).

The car names itself by its VIN, which it reports over OBD-II into every minute record (``vehicle.vin``); the
server binds each terminal to one car (``server.car_binding``). A :class:`CarScenario` adds the VINs the office
names at enrolment (``vins``; a terminal missing from it is enrolled without one and bound on first sight).

=========================  ==================================================================================
``terminal_swapped``       a terminal enrolled for car A trains in car A in the morning, then the box is moved
                           into car B for the afternoon: the afternoon's minutes are ``foreign_car``
``terminal_own_car``       the same terminal trains in its own car all day: nothing to find
``car_without_vin``        a bound terminal in a car that answers ``0902`` with NO DATA: the rule is not applied
``swapped_after_first_sight``  a terminal enrolled without a VIN: bound to car A on first sight (alarm
                           ``vin_bound``), then moved into car B: ``foreign_car``
=========================  ==================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import timedelta

from simulators.fraud import Scenario, SessionPlan, _Builder, _morning, loop_track
from simulators.vehicle import fleet_vin

#: The cars of these scenarios: the training car the terminal is bound to, and the car the box is moved into.
CAR_A = fleet_vin(801)
CAR_B = fleet_vin(802)


@dataclass
class CarScenario(Scenario):
    vins: dict[str, str] = field(default_factory=dict)  # terminal → the VIN named at its enrolment


def _with_vins(scenario: Scenario, vins: dict[str, str]) -> CarScenario:
    return CarScenario(**{f.name: getattr(scenario, f.name) for f in fields(Scenario)}, vins=vins)


def _day(name: str, expected: str | None, base: int, morning: str | None, afternoon: str | None, *,
         enrolled: str | None = CAR_A) -> CarScenario:  # fmt: skip
    """One terminal, one student and coach, a morning and an afternoon session reporting the VINs given; the
    afternoon's minutes are the suspects when ``expected`` names a reason."""
    b = _Builder(name, expected, base)
    t = b.terminal(_morning() - timedelta(minutes=5))
    student, coach = b.new("P"), b.new("C")
    b.session(SessionPlan(t, student, coach, _morning(hour=8), vin=morning))
    b.session(SessionPlan(t, student, coach, _morning(hour=14), track=loop_track(1.0), vin=afternoon),
              suspect=expected is not None)  # fmt: skip
    return _with_vins(b.scenario, {t.id: enrolled} if enrolled else {})


def terminal_swapped() -> CarScenario:
    return _day("terminal_swapped", "foreign_car", 810, CAR_A, CAR_B)


def terminal_own_car() -> CarScenario:
    return _day("terminal_own_car", None, 820, CAR_A, CAR_A)


def car_without_vin() -> CarScenario:
    return _day("car_without_vin", None, 830, None, None)


def swapped_after_first_sight() -> CarScenario:
    return _day("swapped_after_first_sight", "foreign_car", 840, CAR_A, CAR_B, enrolled=None)


CAR_SCENARIOS: dict[str, Callable[[], CarScenario]] = {
    "terminal_swapped": terminal_swapped,
    "terminal_own_car": terminal_own_car,
    "car_without_vin": car_without_vin,
    "swapped_after_first_sight": swapped_after_first_sight,
}
