"""A simulated serial device: a pseudo-terminal whose slave path a program opens like a real port, and the
thread that plays the device on the master side. Shared by the GNSS receiver and the OBD-II adapter simulators."""

from __future__ import annotations

import os
import threading
import tty
from typing import Self


class PtyDevice:
    """Subclasses implement :meth:`_run` (loop until ``self._stop`` is set) on ``self._master``."""

    thread_name = "pty-device"

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: bytes arrive as the device sends them
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=f"{self.thread_name} {self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the pty (a program reading it sees the device vanish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master = self._slave = -1

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        raise NotImplementedError
