"""webguard: web hardening shared by the server's API and the terminal's coach screen: security headers and rate limits.

:class:`SecurityHeaders` is plain ASGI middleware (no per-request Python objects beyond the header list).
:class:`RateLimiter` is a sliding-window counter per key (client address): it counts *failures* (a wrong admin
token, a refused enrolment) so that a legitimate operator is never slowed, while guessing is. It lives in the
process's memory; behind several API processes each limits on its own, which still bounds guessing per process.
(slowapi/limits count requests by decorator and cannot count only failures, hence these 40 lines.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"geolocation=(), microphone=(), camera=()"),
)
#: Pages load their scripts and styles from themselves only; /docs (Swagger UI) needs its CDN, so it gets none.
CSP = b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, csp: bytes = CSP, csp_exempt: tuple[str, ...] = ("/docs", "/redoc")) -> None:
        self.app, self.csp, self.csp_exempt = app, csp, csp_exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        csp = None if path.startswith(self.csp_exempt) else self.csp

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in HEADERS if k not in present]
                if csp and b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", csp))
                if path.startswith("/api/") and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key; :meth:`blocked` says whether the key is over."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self._events.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may try again (0.0 when it may now)."""
        with self._lock:
            now = self._clock()
            q = self._trim(key, now)
            if len(q) < self.limit:
                if not q:
                    self._events.pop(key, None)
                return 0.0
            return max(0.0, q[0] + self.window - now)

    def hit(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            self._trim(key, now).append(now)
            if len(self._events) > 100_000:  # a flood of distinct addresses: forget the quiet ones
                for k in [k for k, q in self._events.items() if not q or q[-1] <= now - self.window]:
                    del self._events[k]
