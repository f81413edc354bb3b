"""What the benchmarks share: the test suite's broker, PKI and signing terminal, throwaway databases, machine facts.

The broker (:func:`conftest.start_mosquitto`: TLS, client certificates from one throwaway CA, the per-terminal ACL),
the signing :class:`conftest.TestTerminal` and :func:`conftest.enrol` are the ones the tests use, so a figure here
is measured on the same parts the tests prove correct.
"""

from __future__ import annotations

import os
import platform
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import conftest as conftest  # noqa: E402 - the test suite's fixtures, on the path just above

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
start_mosquitto = conftest.start_mosquitto
TestTerminal = conftest.TestTerminal
enrol = conftest.enrol
T0 = conftest.T0


def machine() -> str:
    """``nproc``, CPU model and RAM of this machine, one line."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = next(int(x.split()[1]) for x in meminfo if x.startswith("MemTotal"))
        ram = f"{mem_kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        ram = "RAM ?"
    return f"{os.cpu_count()} CPUs ({model}), {ram}, Python {platform.python_version()}"


@contextmanager
def throwaway_postgres() -> Iterator[str | None]:
    """A fresh PostgreSQL database for one run (dropped after), or None when PostgreSQL is not reachable."""
    from sqlalchemy import text

    from server.db import make_engine

    name = f"jiapei_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means: no PostgreSQL here
        print(f"PostgreSQL not reachable at 127.0.0.1:5432 ({type(exc).__name__}): skipped")
        yield None
        return
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrated(url: str) -> Any:
    """A session factory on a migrated database at ``url``."""
    from server import db

    db.upgrade(url)
    return db.make_session_factory(db.make_engine(url))
