"""The simulated clock shared by every simulator of one run: wall time scaled by a factor."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class SimClock:
    """Simulated time = ``start`` + (monotonic seconds since creation) × ``factor``.

    ``factor`` 60 means one real second is one simulated minute. Aware UTC throughout.
    """

    start: datetime
    factor: float = 60.0
    _t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("SimClock.start must be timezone-aware")
        if self.factor <= 0:
            raise ValueError("SimClock.factor must be positive")

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)

    def real_seconds(self, sim_seconds: float) -> float:
        """How many real seconds pass while ``sim_seconds`` of simulated time pass."""
        return sim_seconds / self.factor

    def sleep_sim(self, sim_seconds: float) -> None:
        time.sleep(max(0.0, sim_seconds / self.factor))
