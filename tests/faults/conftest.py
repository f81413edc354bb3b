"""Fixtures of the fault suite, the ``soak`` marker, and the results table printed after the run.

This folder is a package (``__init__.py``) on purpose: a second plain ``conftest`` module would replace the root
one in ``sys.modules`` and break every ``from conftest import …`` of the other suites. Shared helpers live in
``faults.harness``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker, TestTerminal, enrol, start_mosquitto

from agent import sync as agent_sync
from faults.harness import RESULTS
from server import mqtt_consumer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long fault soak, not in the default run (`-m soak` runs it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soaks run only when asked for by ``-m``: the default run keeps within the CI budget."""
    if config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="soak: run with `pytest tests/faults -m soak`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fault → iterations → records → missing / duplicated / double-counted")
    tr.write_line(f"{'fault':44} {'iter':>5} {'records':>8} {'miss':>5} {'dup':>5} {'dbl':>5} {'secs':>7}  note")
    for r in RESULTS:
        tr.write_line(f"{r.fault:44} {r.iterations:>5} {r.records:>8} {r.missing:>5} {r.duplicated:>5} "
                      f"{r.double_counted:>5} {r.seconds:>7.1f}  {r.note}")  # fmt: skip


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry constants patched small (conventions: background work is awaited, retry constants are patched)."""
    monkeypatch.setattr(agent_sync, "ACK_TIMEOUT_S", 2.0)
    monkeypatch.setattr(agent_sync, "RECONNECT_MIN_S", 0.2)
    monkeypatch.setattr(agent_sync, "RECONNECT_MAX_S", 1)
    monkeypatch.setattr(mqtt_consumer, "RECONNECT_MIN_SECONDS", 0.2)
    monkeypatch.setattr(mqtt_consumer, "RECONNECT_MAX_SECONDS", 1)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A persistent-session Mosquitto (TLS, ACL) that tests may kill and start again on the same port."""
    b = start_mosquitto(tmp_path, persistence=True)
    holder = [b]
    yield b
    for proc in (b.process, *(x.process for x in holder[1:])):
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def car(enrolled: Any, terminal: TestTerminal) -> TestTerminal:
    """The enrolled test terminal (its key signs the agent store's records)."""
    return terminal


__all__ = ["enrol"]
