"""The server's notion of now: aware UTC, injected as a ``Clock`` so that tests and replays control time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
