"""Terminal ↔ car binding by VIN: which car a terminal belongs to, so that a box moved into another car is caught.

A terminal number is bound to one car for life (``domain.md``: "terminal number bound to car …; re-register on
hardware change"). The car is named by its VIN (``Terminal.vin``), which the car itself reports over OBD-II in every
minute record (``vehicle.vin``, optional). The minute rule ``foreign_car`` (:mod:`server.validation.minutes`) flags a
minute whose VIN is known and differs from the bound one; the minute goes to the review queue.

The policy:

1. **At enrolment**, when the office knows the car's VIN (from its registration papers), the enrolment token names it
   (``POST /api/enrolments`` ``vin``) and provisioning binds it. This is the strong binding: use it.
2. **Bound on first sight otherwise**: a terminal enrolled without a VIN is bound to the VIN of the earliest minute
   (by start time, then record number) of the first session judged that reports one, and an alarm
   :data:`ALARM_VIN_BOUND` says so, with the VIN and the minute. The first VIN is not trusted silently: an operator
   checks the alarm against the car's papers. Which minutes are judged first depends on arrival order, so a box
   that was already in the wrong car when it first reported could be bound to that car; the alarm is how that is
   found, and a correction (3.) judges everything again.
3. **Correction** (``POST /api/terminals/{id}/vin``, regulator only; :func:`correct_vin`): a binding found wrong
   is replaced, with an audit alarm :data:`ALARM_VIN_CORRECTED` (old and new VIN, reason, operator), and every
   session of the terminal is judged again. This corrects a binding; it is not how a box changes cars: a box
   moved to another car for good is re-registered (revoked, then enrolled as a new terminal number for that car),
   so the records of each terminal number stay tied to one car.

A car that gives no VIN leaves the rule unapplied (as for rpm without a vehicle signal); a terminal without a bound
VIN and without any minute reporting one is simply not bound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from firmware_protocols.identifiers import is_vin
from server.models import Alarm, Minute, Terminal

log = logging.getLogger(__name__)

ALARM_VIN_BOUND = "vin_bound"
ALARM_VIN_CORRECTED = "vin_corrected"


def minute_vin(m: Minute) -> str | None:
    """The VIN a stored minute reported (``minutes.facts``), or None."""
    vin = m.facts.get("vin")
    return vin if is_vin(vin) else None


def bound_vin(s: Session, terminal: str) -> str | None:
    return s.scalar(select(Terminal.vin).where(Terminal.id == terminal))


def bind_on_first_sight(s: Session, terminal: str, minutes: Iterable[Minute], now: datetime) -> str | None:
    """Bind a terminal that has no VIN to the VIN of the earliest of ``minutes`` that reports one, with an alarm.

    Returns the terminal's VIN afterwards: the one bound here, the one another worker bound first, or None (no
    minute reports a VIN). The write is conditional (``WHERE vin IS NULL``), so two workers never both bind.
    """
    current = bound_vin(s, terminal)
    seen = sorted((m.start, m.record_no, vin) for m in minutes if (vin := minute_vin(m)) is not None)
    if current is not None or not seen:
        return current
    start, record_no, vin = seen[0]
    done = s.execute(update(Terminal).where(Terminal.id == terminal, Terminal.vin.is_(None)).values(vin=vin)
                     .execution_options(synchronize_session=False))  # fmt: skip
    if getattr(done, "rowcount", 0) != 1:
        return bound_vin(s, terminal)
    log.warning("terminal %s bound on first sight to the car with VIN %s (minute %s): check it", terminal, vin,
                record_no)  # fmt: skip
    s.add(Alarm(kind=ALARM_VIN_BOUND, terminal_id=terminal, at=now, acknowledged=False,
                detail={"vin": vin, "record_no": record_no, "minute_start": start.isoformat(),
                        "message": "terminal enrolled without a VIN: bound to the first VIN its records reported; "
                                   "check it against the car's papers"}))  # fmt: skip
    return vin


def correct_vin(s: Session, terminal: str, vin: str, reason: str, operator: str, now: datetime) -> str | None:
    """Replace a terminal's bound VIN (caller commits, then judges the terminal's sessions again); returns the old
    one. Raises ``LookupError`` for an unknown terminal and ``ValueError`` for a malformed VIN."""
    if not is_vin(vin):
        raise ValueError(f"{vin!r} is not a VIN (17 characters 0-9A-Z without I, O, Q)")
    row = s.get(Terminal, terminal)
    if row is None:
        raise LookupError(f"no terminal {terminal}")
    old = row.vin
    row.vin = vin
    s.add(Alarm(kind=ALARM_VIN_CORRECTED, terminal_id=terminal, at=now, acknowledged=False,
                detail={"old_vin": old, "vin": vin, "reason": reason, "operator": operator}))  # fmt: skip
    log.warning("terminal %s: bound VIN corrected from %s to %s by %s (%s)", terminal, old, vin, operator, reason)
    return old
